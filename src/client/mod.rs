//! Markab's Rust client library (tokio).
//!
//! A [`Client`] keeps one pipelined TCP connection per shard address, shared
//! by every [`Table`] opened from it. A table routes each request the way the
//! node does: `partition_hash = crc64(hash_key)` (of the sort key when the
//! hash key is empty), `partition_index = partition_hash mod
//! partition_count`, and the partition's route names the shard's address.
//!
//! Routes come from meta ([`Client::connect_meta`], the cluster mode) or
//! from a standalone node ([`Client::connect`]). In meta mode stale routes
//! are refreshed and retried per the rules in `route` and docs/client.md, and
//! the admin API (create_table, drop_table, ...) is available.
//!
//! ```no_run
//! # async fn example() -> Result<(), markab::client::ClientError> {
//! use markab::client::{Client, ClientOptions};
//!
//! let metas = vec!["127.0.0.1:34601".to_string()];
//! let client = Client::connect_meta(&metas, ClientOptions::default()).await?;
//! let table = client.open_table("temp").await?;
//! table.set(b"user1", b"name", b"ada", 0).await?;
//! assert_eq!(table.get(b"user1", b"name").await?, Some(b"ada".to_vec()));
//! # Ok(())
//! # }
//! ```

mod admin;
mod connection;
mod error;
mod route;
mod scan;
mod table;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab_wire::{Envelope, ErrorCode, Gpid, Request, ResponseBody, Route};

use connection::{timeout_error, CallError, Connection};
pub use error::ClientError;
use route::{MetaServers, RouteCell};
pub use route::{
    META_ADDRESSES_MAX, RETRY_BACKOFF_INITIAL, ROUTED_ATTEMPTS_MAX, ROUTE_REFRESH_INTERVAL_MIN,
};
pub use scan::ScanOptions;
pub use table::{MultiGetResult, Table};

/// Pegasus's default operation timeout.
pub const OPERATION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default bound on one request to meta (all meta addresses tried).
pub const META_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default bound on establishing a TCP connection.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default bound on requests in flight per connection.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// Default bound on an encoded request body (Pegasus's
/// `max_allowed_write_size`).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default bound on a response frame body the client accepts.
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Most attempts of one request to a standalone node (the first try plus
/// one retry).
const ATTEMPTS_MAX: usize = 2;

/// Client settings.
///
/// Build with struct update syntax so new fields keep their defaults:
///
/// ```no_run
/// use std::time::Duration;
/// use markab::client::ClientOptions;
///
/// let options = ClientOptions {
///     operation_timeout: Duration::from_millis(500),
///     ..ClientOptions::default()
/// };
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on one operation, from the call until its response, including
    /// dialing and a retry. Default 5 s.
    pub operation_timeout: Duration,
    /// Bound on establishing one TCP connection. Default 3 s.
    pub connect_timeout: Duration,
    /// Most requests in flight on one connection; further requests wait for
    /// a slot (within their timeout). Default 1024.
    pub in_flight_max: usize,
    /// Most bytes of an encoded request body; larger requests fail with
    /// `REQUEST_TOO_LARGE` without touching the network. Default 1 MiB.
    pub request_bytes_max: usize,
    /// Most bytes of a response frame body; a larger frame closes the
    /// connection with a protocol error. Default 64 MiB.
    pub response_bytes_max: usize,
    /// Bound on one request to meta (a route query or an admin call),
    /// trying each meta address in turn. Default 5 s.
    pub meta_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            operation_timeout: OPERATION_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            meta_timeout: META_TIMEOUT_DEFAULT,
        }
    }
}

/// Where routes come from.
#[derive(Debug)]
enum RouteSource {
    /// A standalone node that answers `QueryRoute` for its own tables.
    Node(String),
    /// Meta servers: routes are refreshed from them, and admin calls go to
    /// them.
    Meta(MetaServers),
}

/// The connection to one address, dialed lazily and re-dialed after it fails.
#[derive(Default)]
struct AddressSlot {
    connection: Mutex<Option<Arc<Connection>>>,
    /// Held while dialing, so concurrent callers share one dial.
    dial: tokio::sync::Mutex<()>,
}

pub(crate) struct ClientInner {
    options: ClientOptions,
    route_source: RouteSource,
    slots: Mutex<HashMap<String, Arc<AddressSlot>>>,
    routes: Mutex<HashMap<String, Arc<RouteCell>>>,
}

/// A handle to a Markab deployment. Cheap to clone; clones share the
/// connections and the route cache.
///
/// ```no_run
/// # async fn example() -> Result<(), markab::client::ClientError> {
/// use markab::client::{Client, ClientOptions};
///
/// let client = Client::connect("127.0.0.1:34801", ClientOptions::default()).await?;
/// let table = client.open_table("temp").await?;
/// println!("{} has {} partitions", table.name(), table.partition_count());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Connects to a standalone node at `node_address` (`host:port` of any
    /// of its shards). Fails with [`ClientError::Connect`] when the node
    /// cannot be reached within `options.connect_timeout`.
    pub async fn connect(
        node_address: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let client = Client::new(options, RouteSource::Node(node_address.to_string()));
        client.inner.connection(node_address).await?;
        Ok(client)
    }

    /// Connects to a cluster through its meta servers (`host:port` each; at
    /// most [`META_ADDRESSES_MAX`]). Routes and admin calls go to the meta
    /// that answered last, falling back to the others in turn. Fails with
    /// [`ClientError::Connect`] (naming the last address tried) when no
    /// meta can be reached within `options.connect_timeout` each, and with
    /// `INVALID_ARGUMENT` for an empty or over-long list.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), markab::client::ClientError> {
    /// use markab::client::{Client, ClientOptions};
    ///
    /// let metas = vec!["127.0.0.1:34601".to_string(), "127.0.0.1:34602".to_string()];
    /// let client = Client::connect_meta(&metas, ClientOptions::default()).await?;
    /// for table in client.list_tables(false).await? {
    ///     println!("{} ({} partitions)", table.name, table.partition_count);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_meta(
        meta_addresses: &[String],
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if meta_addresses.is_empty() || meta_addresses.len() > META_ADDRESSES_MAX {
            return Err(ClientError::invalid_argument(format!(
                "connect_meta needs 1..={META_ADDRESSES_MAX} meta addresses, got {}",
                meta_addresses.len()
            )));
        }
        let addresses: Vec<String> = meta_addresses
            .iter()
            .map(|address| address.trim().to_string())
            .collect();
        if let Some(empty) = addresses.iter().position(String::is_empty) {
            return Err(ClientError::invalid_argument(format!(
                "meta address {empty} is empty"
            )));
        }
        let client = Client::new(
            options,
            RouteSource::Meta(MetaServers {
                addresses: addresses.clone(),
                preferred: AtomicUsize::new(0),
            }),
        );
        let mut last_error = None;
        for (index, address) in addresses.iter().enumerate() {
            match client.inner.connection(address).await {
                Ok(_) => {
                    if let RouteSource::Meta(meta) = &client.inner.route_source {
                        meta.preferred
                            .store(index, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(client);
                }
                Err(error) => {
                    tracing::debug!(%address, %error, "meta unreachable");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    fn new(options: ClientOptions, route_source: RouteSource) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                options,
                route_source,
                slots: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether this client routes through meta (made by
    /// [`Client::connect_meta`]).
    pub fn is_meta_mode(&self) -> bool {
        matches!(self.inner.route_source, RouteSource::Meta(_))
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Opens table `name`: fetches its route from meta (or the standalone
    /// node) once; later calls share the cached route, which meta mode
    /// refreshes as needed. Fails with [`ClientError::UnknownTable`] when
    /// the table does not exist.
    pub async fn open_table(&self, name: &str) -> Result<Table, ClientError> {
        let cached = lock(&self.inner.routes).get(name).cloned();
        let cell = match cached {
            Some(cell) => cell,
            None => {
                let route = self.inner.query_route(name).await?;
                lock(&self.inner.routes)
                    .entry(name.to_string())
                    .or_insert_with(|| Arc::new(RouteCell::new(route)))
                    .clone()
            }
        };
        Ok(Table::new(self.inner.clone(), cell))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are single map operations; a poisoned lock holds
    // consistent data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientInner {
    /// The open connection to `address`, dialing one if there is none or
    /// the cached one failed.
    async fn connection(&self, address: &str) -> Result<Arc<Connection>, ClientError> {
        let slot = lock(&self.slots)
            .entry(address.to_string())
            .or_default()
            .clone();
        if let Some(connection) = open_connection(&slot) {
            return Ok(connection);
        }
        let _dialing = slot.dial.lock().await;
        if let Some(connection) = open_connection(&slot) {
            return Ok(connection);
        }
        let connection = Arc::new(Connection::dial(address, &self.options).await?);
        *lock(&slot.connection) = Some(connection.clone());
        Ok(connection)
    }

    /// Sends `request` to `address` and waits for its response.
    ///
    /// Retry policy: a request that never left the client (its connection
    /// had already failed) is retried once on a fresh connection; a request
    /// that may have reached the node is retried once only when it is a
    /// read and the connection failed. Writes are never retried blindly.
    /// A `WRONG_SHARD` answer names the right shard; the request is sent
    /// there once (the node did not execute it).
    pub(crate) async fn call(
        &self,
        address: &str,
        envelope: Envelope,
        request: &Request,
    ) -> Result<ResponseBody, ClientError> {
        let timeout = self.options.operation_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut address = address.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last_attempt = attempt >= ATTEMPTS_MAX;
            let connection = tokio::time::timeout_at(deadline, self.connection(&address))
                .await
                .map_err(|_| timeout_error(request.name(), timeout))??;
            match connection.call(envelope, request, deadline, timeout).await {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(error)) if error.code == ErrorCode::WrongShard && !last_attempt => {
                    tracing::debug!(from = connection.address(), to = %error.message, "wrong shard");
                    address = error.message;
                }
                Ok(Err(error)) => return Err(ClientError::Server(error)),
                Err(CallError::NotSent(
                    error @ (ClientError::Io(_) | ClientError::Protocol(_)),
                )) if !last_attempt => {
                    tracing::debug!(%address, %error, "retrying unsent request");
                }
                Err(CallError::Sent(error @ ClientError::Io(_)))
                    if !last_attempt && !request.is_write() =>
                {
                    tracing::debug!(%address, %error, "retrying read after connection failure");
                }
                Err(error) => return Err(error.into_error()),
            }
        }
    }

    /// The route of `table`, from meta or the standalone node.
    async fn query_route(&self, table: &str) -> Result<Route, ClientError> {
        let node_address = match &self.route_source {
            RouteSource::Node(node_address) => node_address,
            RouteSource::Meta(_) => {
                let deadline = tokio::time::Instant::now() + self.options.meta_timeout;
                return self.query_route_from_meta(table, deadline).await;
            }
        };
        let request = Request::QueryRoute {
            table: table.to_string(),
        };
        let envelope = Envelope {
            gpid: Gpid::default(),
            ..Envelope::default()
        };
        let body = match self.call(node_address, envelope, &request).await {
            Err(ClientError::Server(error)) if error.code == ErrorCode::UnknownTable => {
                return Err(ClientError::UnknownTable(table.to_string()))
            }
            other => other?,
        };
        match body {
            ResponseBody::Route(route) => validate_route(table, route),
            other => Err(unexpected("query_route", &other)),
        }
    }
}

fn open_connection(slot: &AddressSlot) -> Option<Arc<Connection>> {
    lock(&slot.connection)
        .as_ref()
        .filter(|connection| connection.is_open())
        .cloned()
}

/// Checks that a route covers every partition exactly once, sorted by index.
fn validate_route(table: &str, mut route: Route) -> Result<Route, ClientError> {
    let bad = |reason: String| ClientError::Protocol(format!("route of table {table:?}: {reason}"));
    if route.partition_count <= 0 {
        return Err(bad(format!("partition count {}", route.partition_count)));
    }
    route
        .partitions
        .sort_by_key(|partition| partition.partition_index);
    if route.partitions.len() != route.partition_count as usize {
        return Err(bad(format!(
            "{} partitions listed for a partition count of {}",
            route.partitions.len(),
            route.partition_count
        )));
    }
    for (index, partition) in route.partitions.iter().enumerate() {
        if partition.partition_index as usize != index {
            return Err(bad(format!(
                "partition {index} missing (found {})",
                partition.partition_index
            )));
        }
    }
    Ok(route)
}

/// The error for a response body that does not answer `operation`.
pub(crate) fn unexpected(operation: &str, body: &ResponseBody) -> ClientError {
    ClientError::Protocol(format!("unexpected response to {operation}: {body:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use markab_wire::PartitionRoute;

    fn route(indexes: &[i32], partition_count: i32) -> Route {
        Route {
            table: "t".into(),
            app_id: 1,
            partition_count,
            partitions: indexes
                .iter()
                .map(|index| PartitionRoute {
                    partition_index: *index,
                    address: format!("127.0.0.1:{}", 4000 + index),
                    ballot: 1,
                })
                .collect(),
        }
    }

    // Proves a complete route is accepted and sorted by partition index.
    #[test]
    fn validate_route_sorts_complete_route() {
        let checked = validate_route("t", route(&[1, 0, 3, 2], 4)).unwrap();
        let indexes: Vec<i32> = checked
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect();
        assert_eq!(indexes, vec![0, 1, 2, 3]);
    }

    // Proves routes with missing, duplicate or extra partitions, or a
    // non-positive count, are rejected as protocol errors.
    #[test]
    fn validate_route_rejects_incomplete_routes() {
        for bad in [
            route(&[0, 1, 2], 4),
            route(&[0, 1, 1, 3], 4),
            route(&[0, 1, 2, 3, 4], 4),
            route(&[], 0),
        ] {
            assert!(matches!(
                validate_route("t", bad),
                Err(ClientError::Protocol(_))
            ));
        }
    }

    // Proves handles can be shared across tasks and threads.
    #[test]
    fn handles_are_clone_send_sync() {
        fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
        assert_shareable::<Client>();
        assert_shareable::<Table>();
    }

    // Proves the defaults are the documented ones.
    #[test]
    fn options_defaults() {
        let options = ClientOptions::default();
        assert_eq!(options.operation_timeout, Duration::from_secs(5));
        assert_eq!(options.connect_timeout, Duration::from_secs(3));
        assert_eq!(options.in_flight_max, 1024);
        assert_eq!(options.request_bytes_max, 1 << 20);
        assert_eq!(options.meta_timeout, Duration::from_secs(5));
    }

    // Proves connect_meta refuses an empty address list or an empty
    // address before dialing anything.
    #[tokio::test]
    async fn connect_meta_checks_addresses() {
        let empty = Client::connect_meta(&[], ClientOptions::default()).await;
        assert_eq!(
            empty.err().and_then(|error| error.code()),
            Some(ErrorCode::InvalidArgument)
        );
        let blank = Client::connect_meta(&[" ".to_string()], ClientOptions::default()).await;
        assert_eq!(
            blank.err().and_then(|error| error.code()),
            Some(ErrorCode::InvalidArgument)
        );
        let too_many = vec!["127.0.0.1:1".to_string(); META_ADDRESSES_MAX + 1];
        let too_many = Client::connect_meta(&too_many, ClientOptions::default()).await;
        assert_eq!(
            too_many.err().and_then(|error| error.code()),
            Some(ErrorCode::InvalidArgument)
        );
    }
}
