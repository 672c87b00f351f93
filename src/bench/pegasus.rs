//! A Pegasus-protocol target for `markab bench` (`pegasus://META[,META]`):
//! the same cluster measured through its `THFT` front instead of Markab's
//! own frames (docs/thrift.md, docs/bench.md).
//!
//! It behaves as Pegasus's clients do: it asks meta for the table's
//! partitions (`RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX`, following
//! `ERR_FORWARD_TO_OTHERS`), hashes each hash key to its partition with
//! Pegasus's CRC-64, and sends the RPC to that partition's primary over one
//! pipelined connection per primary, matching replies by seqid. A reply
//! naming a routing error (`ERR_OBJECT_NOT_FOUND`, `ERR_INVALID_STATE`)
//! makes it query meta again before the next request. Records map as for
//! Markab: a YCSB key is a hash key, each field a sort key.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{try_join_all, BoxFuture};
use markab_core::key::{partition_hash, partition_index};
use markab_wire::thrift::{self, Reply, ReplyResult, RequestHeader};
use markab_wire::{Key, MultiGetRequest, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::target::{
    sort_key_values, whole_record, Target, TargetError, CONNECT_TIMEOUT, REDIS_OPERATION_TIMEOUT,
};

/// The client timeout sent in each request header.
const CLIENT_TIMEOUT_MS: u32 = 5_000;
/// Most metas tried, leader redirects included, per route query.
const META_HOPS_MAX: usize = 8;

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<Result<Reply, TargetError>>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One pipelined THFT connection.
struct Connection {
    writer: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    waiters: Waiters,
    reader_task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader_task.abort();
    }
}

impl Connection {
    async fn open(address: &str) -> Result<Connection, TargetError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| TargetError::Io(format!("connect to {address} timed out")))?
            .map_err(|error| TargetError::Io(format!("connect to {address}: {error}")))?;
        stream
            .set_nodelay(true)
            .map_err(|error| TargetError::Io(error.to_string()))?;
        let (mut reader, writer) = stream.into_split();
        let waiters: Waiters = Arc::default();
        let reader_waiters = waiters.clone();
        let reader_task = tokio::spawn(async move {
            let failure = loop {
                match read_reply(&mut reader).await {
                    Ok(reply) => {
                        let waiter = lock(&reader_waiters).remove(&reply.seqid);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(Ok(reply));
                        }
                    }
                    Err(error) => break error,
                }
            };
            for (_, waiter) in lock(&reader_waiters).drain() {
                let _ = waiter.send(Err(TargetError::Io(failure.to_string())));
            }
        });
        Ok(Connection {
            writer: tokio::sync::Mutex::new(writer),
            waiters,
            reader_task,
        })
    }

    /// Sends one request frame and waits for the reply with `seqid`.
    async fn call(&self, seqid: i32, frame: &[u8]) -> Result<Reply, TargetError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut writer = self.writer.lock().await;
            if self.reader_task.is_finished() {
                return Err(TargetError::Io("connection closed".into()));
            }
            lock(&self.waiters).insert(seqid, sender);
            writer
                .write_all(frame)
                .await
                .map_err(|error| TargetError::Io(error.to_string()))?;
        }
        let reply = tokio::time::timeout(REDIS_OPERATION_TIMEOUT, receiver).await;
        lock(&self.waiters).remove(&seqid);
        reply
            .map_err(|_| TargetError::Io("pegasus operation timed out".into()))?
            .map_err(|_| TargetError::Io("connection closed".into()))?
    }
}

/// Reads one reply frame: a big-endian length that counts itself, then
/// the rest.
async fn read_reply(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Result<Reply, TargetError> {
    let mut length = [0u8; 4];
    reader
        .read_exact(&mut length)
        .await
        .map_err(|error| TargetError::Io(error.to_string()))?;
    let total = thrift::reply_frame_len(&length)
        .map_err(|error| TargetError::Protocol(error.to_string()))?
        .unwrap_or_default();
    let mut frame = vec![0u8; total];
    frame[..4].copy_from_slice(&length);
    reader
        .read_exact(&mut frame[4..])
        .await
        .map_err(|error| TargetError::Io(error.to_string()))?;
    thrift::decode_reply(&frame).map_err(|error| TargetError::Protocol(error.to_string()))
}

/// A table's partitions as meta last gave them.
#[derive(Default)]
struct PegasusRoute {
    app_id: i32,
    primaries: Vec<Option<SocketAddrV4>>,
}

/// `pegasus://META[,META]`: one table of a cluster through Pegasus's
/// protocol.
pub struct PegasusTarget {
    metas: Vec<String>,
    table: String,
    route: tokio::sync::RwLock<PegasusRoute>,
    stale: AtomicBool,
    connections: tokio::sync::Mutex<HashMap<SocketAddrV4, Arc<Connection>>>,
    next_seqid: AtomicI32,
}

impl PegasusTarget {
    /// Queries meta for `table` and returns a target ready to send.
    pub async fn open(metas: &[String], table: &str) -> Result<PegasusTarget, TargetError> {
        let target = PegasusTarget {
            metas: metas.to_vec(),
            table: table.to_string(),
            route: tokio::sync::RwLock::default(),
            stale: AtomicBool::new(true),
            connections: tokio::sync::Mutex::default(),
            next_seqid: AtomicI32::new(1),
        };
        target.refresh_route().await?;
        Ok(target)
    }

    fn seqid(&self) -> i32 {
        self.next_seqid.fetch_add(1, Ordering::Relaxed) & i32::MAX
    }

    /// Asks the metas for the route, following leader redirects.
    async fn refresh_route(&self) -> Result<(), TargetError> {
        let mut candidates: Vec<String> = self.metas.clone();
        let mut last_error = TargetError::Io("no meta answered".into());
        for _ in 0..META_HOPS_MAX {
            let Some(meta) = candidates.first().cloned() else {
                break;
            };
            candidates.remove(0);
            match self.query_config(&meta).await {
                Ok(Reply {
                    result: Some(ReplyResult::QueryConfig(config)),
                    ..
                }) => match config.err.as_str() {
                    "ERR_OK" => {
                        let primaries = config.partitions.iter().map(|p| p.primary).collect();
                        *self.route.write().await = PegasusRoute {
                            app_id: config.app_id,
                            primaries,
                        };
                        self.stale.store(false, Ordering::Relaxed);
                        return Ok(());
                    }
                    "ERR_FORWARD_TO_OTHERS" => {
                        if let Some(leader) = config.partitions.first().and_then(|p| p.primary) {
                            candidates.insert(0, leader.to_string());
                        }
                        last_error = TargetError::Protocol("meta is not the leader".into());
                    }
                    other => {
                        return Err(TargetError::Protocol(format!(
                            "query config of table {:?}: {other}",
                            self.table
                        )))
                    }
                },
                Ok(reply) => {
                    last_error =
                        TargetError::Protocol(format!("query config answered {}", reply.error_name))
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    async fn query_config(&self, meta: &str) -> Result<Reply, TargetError> {
        let connection = Connection::open(meta).await?;
        let seqid = self.seqid();
        let body = thrift::encode_query_config_call(seqid, &self.table);
        let frame = thrift::encode_request_frame(&RequestHeader::default(), &body);
        connection.call(seqid, &frame).await
    }

    async fn connection(&self, address: SocketAddrV4) -> Result<Arc<Connection>, TargetError> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(&address) {
            if !connection.reader_task.is_finished() {
                return Ok(connection.clone());
            }
        }
        let connection = Arc::new(Connection::open(&address.to_string()).await?);
        connections.insert(address, connection.clone());
        Ok(connection)
    }

    /// Sends `request` (about `hash_key`) to its partition's primary.
    async fn call(&self, hash_key: &[u8], request: &Request) -> Result<ReplyResult, TargetError> {
        if self.stale.load(Ordering::Relaxed) {
            self.refresh_route().await?;
        }
        let hash = partition_hash(hash_key, b"");
        let (app_id, partition, primary) = {
            let route = self.route.read().await;
            let count = route.primaries.len() as u32;
            let partition = partition_index(hash, count);
            (
                route.app_id,
                partition,
                route.primaries.get(partition as usize).copied().flatten(),
            )
        };
        let Some(primary) = primary else {
            self.stale.store(true, Ordering::Relaxed);
            return Err(TargetError::Protocol(format!(
                "partition {partition} has no primary"
            )));
        };
        let seqid = self.seqid();
        let (_, body) = thrift::encode_data_call(seqid, request, 0)
            .map_err(|error| TargetError::Protocol(error.message))?;
        let header = RequestHeader {
            version: 0,
            app_id,
            partition_index: partition as i32,
            timeout_ms: CLIENT_TIMEOUT_MS,
            partition_hash: hash,
            is_backup_request: false,
        };
        let frame = thrift::encode_request_frame(&header, &body);
        let reply = self.connection(primary).await?.call(seqid, &frame).await?;
        match (reply.error_name.as_str(), reply.result) {
            ("ERR_OK", Some(result)) => Ok(result),
            (
                name @ ("ERR_OBJECT_NOT_FOUND"
                | "ERR_INVALID_STATE"
                | "ERR_PARENT_PARTITION_MISUSED"),
                _,
            ) => {
                self.stale.store(true, Ordering::Relaxed);
                Err(TargetError::Protocol(name.to_string()))
            }
            (name, _) => Err(TargetError::Protocol(name.to_string())),
        }
    }

    async fn read_all(&self, key: &[u8]) -> Result<usize, TargetError> {
        self.multi_get(key, whole_record(key)).await
    }

    async fn multi_get(&self, key: &[u8], request: MultiGetRequest) -> Result<usize, TargetError> {
        match self.call(key, &Request::MultiGet(request)).await? {
            ReplyResult::MultiGet { error, kvs, .. }
                if error == thrift::STORAGE_OK || error == thrift::STORAGE_INCOMPLETE =>
            {
                Ok(kvs.len())
            }
            ReplyResult::MultiGet { error, .. } => Err(storage_error(error)),
            other => Err(unexpected(&other)),
        }
    }
}

fn storage_error(error: i32) -> TargetError {
    TargetError::Protocol(format!("storage error {error}"))
}

fn unexpected(result: &ReplyResult) -> TargetError {
    TargetError::Protocol(format!("unexpected reply {result:?}"))
}

impl Target for PegasusTarget {
    fn read<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let found = if fields.is_empty() {
                self.read_all(key).await?
            } else {
                let mut request = MultiGetRequest::range(key.to_vec());
                request.sort_keys = fields.to_vec();
                self.multi_get(key, request).await?
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
        Box::pin(async move {
            let request = match fields {
                [] => return Err(TargetError::Protocol("a write needs a field".into())),
                [(field, value)] => Request::Set {
                    key: Key::new(key, field.clone()),
                    value: value.clone(),
                    ttl_seconds: 0,
                },
                _ => Request::MultiSet {
                    hash_key: key.to_vec(),
                    kvs: sort_key_values(fields),
                    ttl_seconds: 0,
                },
            };
            match self.call(key, &request).await? {
                ReplyResult::Update {
                    error: thrift::STORAGE_OK,
                    ..
                } => Ok(()),
                ReplyResult::Update { error, .. } => Err(storage_error(error)),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn scan<'a>(&'a self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            try_join_all(keys.iter().map(|key| self.read_all(key))).await?;
            Ok(())
        })
    }
}
