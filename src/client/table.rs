//! A table handle: one async method per operation.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::try_join_all;
use futures::Stream;
use markab_wire::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckAndSetResult, Envelope, Gpid, Key,
    MultiGetRequest, Record, Request, ResponseBody, ScanRange, SortKeyValue,
};

use super::route::RouteCell;
use super::scan::{self, ScanCursor, ScanOptions};
use super::{unexpected, ClientError, ClientInner, RouteSource};
#[cfg(test)]
use crate::key::HASH_KEY_BYTES_MAX;
use crate::key::{partition_hash, partition_index};

/// The result of a multi_get.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MultiGetResult {
    /// Ascending by sort key.
    pub kvs: Vec<SortKeyValue>,
    /// A count, byte or server bound cut the result short.
    pub incomplete: bool,
}

/// Where one request goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) partition_index: u32,
    pub(crate) partition_hash: u64,
    /// The partition count `partition_index` was computed for: the route
    /// version sent with the request.
    pub(crate) partition_count: u32,
    /// Routed by one key's hash: after a split the partition is computed
    /// again from the new count. A target of a whole partition (a batch
    /// group, a full scan) is not: its caller plans again.
    pub(crate) keyed: bool,
}

/// An open table. Cheap to clone; clones share the client's connections.
///
/// ```no_run
/// # async fn example(table: markab::client::Table) -> Result<(), markab::client::ClientError> {
/// table.set(b"hk", b"sk", b"value", 60).await?;
/// let ttl_seconds = table.ttl(b"hk", b"sk").await?;
/// assert!(matches!(ttl_seconds, Some(seconds) if seconds <= 60));
/// table.del(b"hk", b"sk").await?;
/// assert!(!table.exist(b"hk", b"sk").await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Table {
    client: Arc<ClientInner>,
    route: Arc<RouteCell>,
}

impl Table {
    pub(crate) fn new(client: Arc<ClientInner>, route: Arc<RouteCell>) -> Table {
        Table { client, route }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.route.name
    }

    /// The table's id (Pegasus's app id).
    pub fn app_id(&self) -> i32 {
        self.route.app_id
    }

    /// The table's partition count as the route in use has it (a split
    /// doubles it).
    pub fn partition_count(&self) -> u32 {
        self.route.current().partition_count.max(1) as u32
    }

    /// The route in use now: each partition's serving address and ballot
    /// (refreshed from meta as needed in meta mode).
    pub fn route(&self) -> markab_wire::Route {
        self.route.current().as_ref().clone()
    }

    /// The partition and hash a key routes to.
    pub(crate) fn target(&self, hash_key: &[u8], sort_key: &[u8]) -> Target {
        let hash = partition_hash(hash_key, sort_key);
        let partition_count = self.partition_count();
        Target {
            partition_index: partition_index(hash, partition_count),
            partition_hash: hash,
            partition_count,
            keyed: true,
        }
    }

    /// Sends `request` to the shard serving `target` (in meta mode with
    /// route refresh and bounded retries).
    pub(crate) async fn call(
        &self,
        target: Target,
        request: &Request,
    ) -> Result<ResponseBody, ClientError> {
        if let RouteSource::Meta(_) = self.client.route_source {
            return self.client.call_routed(&self.route, target, request).await;
        }
        let route = self.route.current();
        let partition = route
            .partitions
            .get(target.partition_index as usize)
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "partition {} missing from the route of {}",
                    target.partition_index,
                    self.name()
                ))
            })?;
        let envelope = Envelope {
            request_id: 0,
            timeout_ms: 0,
            gpid: Gpid {
                app_id: route.app_id,
                partition_index: partition.partition_index,
            },
            partition_hash: target.partition_hash,
            partition_count: target.partition_count as i32,
        };
        self.client
            .call(&partition.address, envelope, request)
            .await
    }

    async fn call_key(&self, key: &Key, request: &Request) -> Result<ResponseBody, ClientError> {
        check_hash_key(&key.hash_key, true)?;
        self.call(self.target(&key.hash_key, &key.sort_key), request)
            .await
    }

    async fn call_hash_key(
        &self,
        hash_key: &[u8],
        request: &Request,
    ) -> Result<ResponseBody, ClientError> {
        check_hash_key(hash_key, false)?;
        self.call(self.target(hash_key, &[]), request).await
    }

    /// Reads one record's value; `None` when it does not exist or expired.
    pub async fn get(
        &self,
        hash_key: &[u8],
        sort_key: &[u8],
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let key = Key::new(hash_key, sort_key);
        let request = Request::Get(key.clone());
        match self.call_key(&key, &request).await {
            Ok(ResponseBody::Value(value)) => Ok(Some(value)),
            Ok(other) => Err(unexpected("get", &other)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes one record; `ttl_seconds` 0 means it never expires.
    pub async fn set(
        &self,
        hash_key: &[u8],
        sort_key: &[u8],
        value: &[u8],
        ttl_seconds: u32,
    ) -> Result<(), ClientError> {
        let key = Key::new(hash_key, sort_key);
        let request = Request::Set {
            key: key.clone(),
            value: value.to_vec(),
            ttl_seconds,
        };
        expect_done("set", self.call_key(&key, &request).await?)
    }

    /// Deletes one record (deleting a missing record succeeds).
    pub async fn del(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<(), ClientError> {
        let key = Key::new(hash_key, sort_key);
        let request = Request::Del(key.clone());
        expect_done("del", self.call_key(&key, &request).await?)
    }

    /// Whether a record exists (and has not expired).
    pub async fn exist(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<bool, ClientError> {
        let key = Key::new(hash_key, sort_key);
        let request = Request::Exist(key.clone());
        match self.call_key(&key, &request).await {
            Ok(ResponseBody::Exist(exists)) => Ok(exists),
            Ok(other) => Err(unexpected("exist", &other)),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Seconds a record has left: `None` when it does not exist, `Some(-1)`
    /// when it has no TTL.
    pub async fn ttl(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<Option<i32>, ClientError> {
        let key = Key::new(hash_key, sort_key);
        let request = Request::Ttl(key.clone());
        match self.call_key(&key, &request).await {
            Ok(ResponseBody::Ttl(seconds)) => Ok(Some(seconds)),
            Ok(other) => Err(unexpected("ttl", &other)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Reads several sort keys of one hash key, or a range of them (see
    /// [`MultiGetRequest::range`] for Pegasus's defaults).
    ///
    /// ```no_run
    /// # async fn example(table: markab::client::Table) -> Result<(), markab::client::ClientError> {
    /// use markab::wire::MultiGetRequest;
    ///
    /// let mut request = MultiGetRequest::range(b"user1".to_vec());
    /// request.start_sort_key = b"a".to_vec();
    /// request.stop_sort_key = b"m".to_vec();
    /// let result = table.multi_get(request).await?;
    /// for kv in &result.kvs {
    ///     println!("{:?} => {:?}", kv.sort_key, kv.value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn multi_get(&self, request: MultiGetRequest) -> Result<MultiGetResult, ClientError> {
        let hash_key = request.hash_key.clone();
        let request = Request::MultiGet(request);
        match self.call_hash_key(&hash_key, &request).await? {
            ResponseBody::MultiGet { kvs, incomplete } => Ok(MultiGetResult { kvs, incomplete }),
            other => Err(unexpected("multi_get", &other)),
        }
    }

    /// Reads the listed sort keys of one hash key (the ones that exist come
    /// back, ascending by sort key).
    pub async fn multi_get_sort_keys(
        &self,
        hash_key: &[u8],
        sort_keys: Vec<Vec<u8>>,
    ) -> Result<MultiGetResult, ClientError> {
        if sort_keys.is_empty() {
            return Err(ClientError::invalid_argument(
                "multi_get_sort_keys needs at least one sort key",
            ));
        }
        let mut request = MultiGetRequest::range(hash_key.to_vec());
        request.sort_keys = sort_keys;
        request.max_kv_count = 0;
        request.max_kv_size = 0;
        self.multi_get(request).await
    }

    /// Writes several records of one hash key atomically.
    pub async fn multi_set(
        &self,
        hash_key: &[u8],
        kvs: Vec<SortKeyValue>,
        ttl_seconds: u32,
    ) -> Result<(), ClientError> {
        if kvs.is_empty() {
            return Err(ClientError::invalid_argument(
                "multi_set needs at least one record",
            ));
        }
        let request = Request::MultiSet {
            hash_key: hash_key.to_vec(),
            kvs,
            ttl_seconds,
        };
        expect_done("multi_set", self.call_hash_key(hash_key, &request).await?)
    }

    /// Deletes several sort keys of one hash key atomically; returns how many
    /// records were deleted.
    pub async fn multi_del(
        &self,
        hash_key: &[u8],
        sort_keys: Vec<Vec<u8>>,
    ) -> Result<i64, ClientError> {
        if sort_keys.is_empty() {
            return Err(ClientError::invalid_argument(
                "multi_del needs at least one sort key",
            ));
        }
        let request = Request::MultiDel {
            hash_key: hash_key.to_vec(),
            sort_keys,
        };
        match self.call_hash_key(hash_key, &request).await? {
            ResponseBody::Count(count) => Ok(count),
            other => Err(unexpected("multi_del", &other)),
        }
    }

    /// Counts the live sort keys of one hash key.
    pub async fn sortkey_count(&self, hash_key: &[u8]) -> Result<i64, ClientError> {
        let request = Request::SortKeyCount {
            hash_key: hash_key.to_vec(),
        };
        match self.call_hash_key(hash_key, &request).await? {
            ResponseBody::Count(count) => Ok(count),
            other => Err(unexpected("sortkey_count", &other)),
        }
    }

    /// Adds `increment` to a record holding a decimal integer (a missing or
    /// empty record counts as 0) and returns the new value. `ttl_seconds`:
    /// 0 keeps the old TTL, > 0 sets a new one, < 0 clears it.
    pub async fn incr(
        &self,
        hash_key: &[u8],
        sort_key: &[u8],
        increment: i64,
        ttl_seconds: i32,
    ) -> Result<i64, ClientError> {
        let key = Key::new(hash_key, sort_key);
        let request = Request::Incr {
            key: key.clone(),
            increment,
            ttl_seconds,
        };
        match self.call_key(&key, &request).await? {
            ResponseBody::Incr(value) => Ok(value),
            other => Err(unexpected("incr", &other)),
        }
    }

    /// Atomically checks one sort key and, when the check passes, sets one.
    /// An empty hash key routes by the check sort key (as Pegasus does).
    ///
    /// ```no_run
    /// # async fn example(table: markab::client::Table) -> Result<(), markab::client::ClientError> {
    /// use markab::wire::{CheckAndSetRequest, CheckType};
    ///
    /// let result = table
    ///     .check_and_set(CheckAndSetRequest {
    ///         hash_key: b"user1".to_vec(),
    ///         check_sort_key: b"lock".to_vec(),
    ///         check_type: CheckType::ValueNotExist,
    ///         check_operand: Vec::new(),
    ///         set_sort_key: b"lock".to_vec(),
    ///         set_value: b"owner-7".to_vec(),
    ///         set_ttl_seconds: 30,
    ///         return_check_value: false,
    ///     })
    ///     .await?;
    /// println!("lock taken: {}", result.set_succeeded);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check_and_set(
        &self,
        request: CheckAndSetRequest,
    ) -> Result<CheckAndSetResult, ClientError> {
        let key = Key::new(request.hash_key.clone(), request.check_sort_key.clone());
        let request = Request::CheckAndSet(request);
        match self.call_key(&key, &request).await? {
            ResponseBody::CheckAndSet(result) => Ok(result),
            other => Err(unexpected("check_and_set", &other)),
        }
    }

    /// Atomically checks one sort key and, when the check passes, applies a
    /// list of puts and deletes on the same hash key.
    pub async fn check_and_mutate(
        &self,
        request: CheckAndMutateRequest,
    ) -> Result<CheckAndSetResult, ClientError> {
        if request.mutations.is_empty() {
            return Err(ClientError::invalid_argument(
                "check_and_mutate needs at least one mutation",
            ));
        }
        let key = Key::new(request.hash_key.clone(), request.check_sort_key.clone());
        let request = Request::CheckAndMutate(request);
        match self.call_key(&key, &request).await? {
            ResponseBody::CheckAndSet(result) => Ok(result),
            other => Err(unexpected("check_and_mutate", &other)),
        }
    }

    /// Applies mutations another cluster's duplication shipped
    /// (docs/duplication.md) to partition `partition_index` of this table,
    /// which must have the table's current partition count (partition p of
    /// the source ships to partition p): each record applies iff its
    /// timetag is not older than the one held for its key. Returns how
    /// many records applied. Shipping the same batch again is harmless.
    pub async fn duplicate(
        &self,
        partition_index: u32,
        request: markab_wire::DuplicateRequest,
    ) -> Result<i64, ClientError> {
        let partition_count = self.partition_count();
        if partition_index >= partition_count {
            return Err(ClientError::invalid_argument(format!(
                "partition {partition_index} of {} (its count is {partition_count})",
                self.name()
            )));
        }
        let target = Target {
            partition_index,
            partition_hash: 0,
            partition_count,
            keyed: false,
        };
        match self.call(target, &Request::Duplicate(request)).await? {
            ResponseBody::Count(applied) => Ok(applied),
            other => Err(unexpected("duplicate", &other)),
        }
    }

    /// Reads many records across partitions: one `BatchGet` per partition,
    /// sent concurrently. Returns the records that exist, in the order of
    /// `keys`.
    pub async fn batch_get(&self, keys: Vec<Key>) -> Result<Vec<Record>, ClientError> {
        for key in &keys {
            check_hash_key(&key.hash_key, true)?;
        }
        // A split while the batch runs: group again under the new count.
        let mut plans = 1;
        loop {
            match self.batch_get_once(keys.clone()).await {
                Err(error) if is_stale_route(&error) && plans < PLANS_MAX => plans += 1,
                result => return result,
            }
        }
    }

    async fn batch_get_once(&self, keys: Vec<Key>) -> Result<Vec<Record>, ClientError> {
        let partition_count = self.partition_count();
        // partition index -> (its keys, their positions in `keys`).
        let mut groups: BTreeMap<u32, (Vec<Key>, Vec<usize>)> = BTreeMap::new();
        for (position, key) in keys.into_iter().enumerate() {
            let hash = partition_hash(&key.hash_key, &key.sort_key);
            let group = groups
                .entry(partition_index(hash, partition_count))
                .or_default();
            group.0.push(key);
            group.1.push(position);
        }
        let key_count: usize = groups.values().map(|(keys, _)| keys.len()).sum();
        let calls = groups.into_iter().map(|(partition, (keys, positions))| {
            // A batch has no single hash key: the envelope's hash is 0.
            let target = Target {
                partition_index: partition,
                partition_hash: 0,
                partition_count,
                keyed: false,
            };
            async move {
                let request = Request::BatchGet { keys };
                let body = self.call(target, &request).await?;
                let Request::BatchGet { keys } = request else {
                    unreachable!("built above as BatchGet")
                };
                match body {
                    ResponseBody::BatchGet(records) => align_batch(&keys, &positions, records),
                    other => Err(unexpected("batch_get", &other)),
                }
            }
        });
        let mut placed: Vec<Option<Record>> = vec![None; key_count];
        for group in try_join_all(calls).await? {
            for (position, record) in group {
                placed[position] = Some(record);
            }
        }
        Ok(placed.into_iter().flatten().collect())
    }

    /// Scans the sort keys of one hash key in order, from `start_sort_key`
    /// to `stop_sort_key` (empty = to the end), in batches through a
    /// server-side cursor. Dropping the stream early clears the cursor (best
    /// effort).
    ///
    /// ```no_run
    /// # async fn example(table: markab::client::Table) -> Result<(), markab::client::ClientError> {
    /// use futures::StreamExt;
    /// use markab::client::ScanOptions;
    ///
    /// let records = table.hash_scan(b"user1", b"", b"", ScanOptions::default());
    /// futures::pin_mut!(records);
    /// while let Some(record) = records.next().await {
    ///     let record = record?;
    ///     println!("{:?} => {:?}", record.sort_key, record.value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash_scan(
        &self,
        hash_key: &[u8],
        start_sort_key: &[u8],
        stop_sort_key: &[u8],
        options: ScanOptions,
    ) -> impl Stream<Item = Result<Record, ClientError>> + Send + 'static {
        let checked = check_hash_key(hash_key, false);
        let range = ScanRange::Hash {
            hash_key: hash_key.to_vec(),
            start_sort_key: start_sort_key.to_vec(),
            stop_sort_key: stop_sort_key.to_vec(),
        };
        let target = self.target(hash_key, &[]);
        let cursor = ScanCursor::new(self.clone(), options.to_request(range, false), vec![target]);
        scan::records(cursor, checked.err())
    }

    /// Scans every record of the table, partition after partition (records
    /// come in no particular order). Dropping the stream early clears the
    /// current cursor (best effort).
    pub fn full_scan(
        &self,
        options: ScanOptions,
    ) -> impl Stream<Item = Result<Record, ClientError>> + Send + 'static {
        let cursor = ScanCursor::new(
            self.clone(),
            options.to_request(ScanRange::Full, false),
            self.all_partitions(),
        );
        scan::records(cursor, None)
    }

    /// Counts the records of the table that pass the options' filters, by a
    /// full scan that returns only counts.
    /// A split while it counts starts it again under the new count.
    pub async fn count(&self, options: ScanOptions) -> Result<i64, ClientError> {
        let mut plans = 1;
        loop {
            let mut cursor = ScanCursor::new(
                self.clone(),
                options.to_request(ScanRange::Full, true),
                self.all_partitions(),
            );
            let mut total: i64 = 0;
            let counted = loop {
                match cursor.next_batch().await {
                    Ok(Some(batch)) => total = total.saturating_add(batch.count),
                    Ok(None) => break Ok(total),
                    Err(error) => break Err(error),
                }
            };
            match counted {
                Err(error) if is_stale_route(&error) && plans < PLANS_MAX => plans += 1,
                result => return result,
            }
        }
    }

    /// One target per partition of the route in use.
    pub(crate) fn all_partitions(&self) -> Vec<Target> {
        let partition_count = self.partition_count();
        (0..partition_count)
            .map(|partition_index| Target {
                partition_index,
                partition_hash: 0,
                partition_count,
                keyed: false,
            })
            .collect()
    }
}

/// Pairs a partition's batch_get answer (the existing records, in request
/// order) with the callers' positions of the requested keys.
fn align_batch(
    keys: &[Key],
    positions: &[usize],
    records: Vec<Record>,
) -> Result<Vec<(usize, Record)>, ClientError> {
    let mut aligned = Vec::with_capacity(records.len());
    let mut records = records.into_iter().peekable();
    for (key, position) in keys.iter().zip(positions) {
        let matches = records.peek().is_some_and(|record| {
            record.hash_key == key.hash_key && record.sort_key == key.sort_key
        });
        if matches {
            let record = records.next().expect("peeked");
            aligned.push((*position, record));
        }
    }
    if let Some(extra) = records.next() {
        return Err(ClientError::Protocol(format!(
            "batch_get answered a record that was not asked for, or out of order: {:?}/{:?}",
            extra.hash_key, extra.sort_key
        )));
    }
    Ok(aligned)
}

/// Checks a hash key's length; `allow_empty` for single-record operations
/// (an empty hash key routes by the sort key, as in Pegasus).
/// Most times a multi-partition operation is planned again after splits
/// while it runs.
const PLANS_MAX: usize = 4;

/// Whether `error` says the table's partition count changed (a split).
pub(crate) fn is_stale_route(error: &ClientError) -> bool {
    matches!(error, ClientError::Server(error) if error.code == markab_wire::ErrorCode::StaleRoute)
}

fn check_hash_key(hash_key: &[u8], allow_empty: bool) -> Result<(), ClientError> {
    if hash_key.is_empty() && !allow_empty {
        return Err(ClientError::invalid_argument("hash key must not be empty"));
    }
    crate::key::check_hash_key(hash_key).map_err(ClientError::Server)
}

fn is_not_found(error: &ClientError) -> bool {
    matches!(error, ClientError::Server(op) if op.code == markab_wire::ErrorCode::NotFound)
}

fn expect_done(operation: &str, body: ResponseBody) -> Result<(), ClientError> {
    match body {
        ResponseBody::Done => Ok(()),
        other => Err(unexpected(operation, &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash_key: &str, sort_key: &str) -> Record {
        Record {
            hash_key: hash_key.into(),
            sort_key: sort_key.into(),
            value: format!("{hash_key}/{sort_key}").into_bytes(),
        }
    }

    // Proves batch_get alignment skips missing keys and maps found records
    // back to the callers' positions, duplicates included.
    #[test]
    fn align_batch_maps_found_records_to_positions() {
        let keys = vec![
            Key::new("a", "1"),
            Key::new("b", "2"),
            Key::new("a", "1"),
            Key::new("c", "3"),
        ];
        let positions = vec![0, 3, 5, 9];
        let records = vec![record("a", "1"), record("a", "1"), record("c", "3")];
        let aligned = align_batch(&keys, &positions, records).unwrap();
        let placed: Vec<usize> = aligned.iter().map(|(position, _)| *position).collect();
        assert_eq!(placed, vec![0, 5, 9]);
        assert_eq!(aligned[2].1, record("c", "3"));
    }

    // Proves a record the client did not ask for is a protocol error.
    #[test]
    fn align_batch_rejects_unrequested_records() {
        let keys = vec![Key::new("a", "1")];
        let error = align_batch(&keys, &[0], vec![record("z", "9")]).unwrap_err();
        assert!(matches!(error, ClientError::Protocol(_)));
    }

    // Proves hash keys are checked for emptiness (where required) and length.
    #[test]
    fn check_hash_key_bounds() {
        assert!(check_hash_key(b"", true).is_ok());
        assert!(check_hash_key(b"", false).is_err());
        assert!(check_hash_key(&vec![0; HASH_KEY_BYTES_MAX], false).is_ok());
        let error = check_hash_key(&vec![0; HASH_KEY_BYTES_MAX + 1], true).unwrap_err();
        assert_eq!(error.code(), Some(markab_wire::ErrorCode::InvalidArgument));
    }
}
