//! [`Partition`]: Pegasus's point and atomic operations on one partition
//! replica, over any [`StorageEngine`]. Range reads (multi_get ranges,
//! sortkey_count, scans) live in `scan.rs`. Semantics: docs/storage.md,
//! "Operations".

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::HashMap;

use super::timetag::{self, HeldTimetag, Timetag};
use super::{storage_error, StorageEngine, StorageLimits, WriteBatch, WriteOp};
use crate::key::{self, check_hash_key, encode_key, encode_value, expire_ts_for_ttl};
use crate::wire::message::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckAndSetResult, CheckType, DuplicateRequest,
    ErrorCode, Key, Mutation, OpError, Record, Request, Response, ResponseBody, SortKeyValue,
};

/// A prepared write: its batch and the reply to send once it is applied.
type Prepared = Result<(WriteBatch, ResponseBody), OpError>;

/// A live (present, unexpired) record's expire time and user data.
pub(super) struct LiveValue {
    pub expire_ts: u32,
    pub user_data: Vec<u8>,
}

/// Pegasus's data operations on one partition replica.
///
/// Every method takes the current time (`now_epoch_s`, seconds since
/// 2016-01-01, see [`key::now_epoch_s`]) so that the simulator can drive
/// the clock; records with `0 < expire_ts <= now_epoch_s` are invisible.
///
/// Writes happen in two steps so that a write is applied only once it is
/// durable in the mutation log: [`Partition::prepare_write`] turns a write
/// request into plain puts and deletes (evaluating incr and the checks of
/// check_and_* against the latest state, staged writes included) and
/// [`Partition::apply`] writes them to the engine. Between the two the batch
/// is *staged*: reads do not see it (**reads-see-durable-only**), later
/// prepares do (**prepare-sees-staged**), so atomic operations on one hash
/// key stay atomic while earlier writes wait for their log sync.
///
/// On a duplicated table ([`Partition::set_timetags`]) every local write
/// also writes each record's timetag, newer than the one it replaces
/// (**local-write-newest**), and [`Partition::prepare_duplicate`] applies
/// another cluster's shipped writes by last-write-wins on timetags
/// (docs/duplication.md).
pub struct Partition<E: StorageEngine> {
    engine: E,
    limits: StorageLimits,
    /// Staged writes by raw key: the decree of the latest staged batch that
    /// touches the key and the raw value it leaves (`None` = deleted).
    staged: RefCell<HashMap<Vec<u8>, StagedValue>>,
    /// The partition count and index this partition owns keys of
    /// (count 0 = every key): full scans skip the records of other
    /// partitions' keys, which a split leaves behind until the engine
    /// drops them (**split-owned-only**).
    owner: Cell<(u32, u32)>,
    /// The cluster id local writes are tagged with while the table is
    /// duplicated; `None`: local writes carry no timetag.
    timetags: Cell<Option<u8>>,
}

/// A staged write to one key: the decree of the latest staged batch that
/// touches it and the raw value it leaves (`None` = deleted).
type StagedValue = (i64, Option<Vec<u8>>);

impl<E: StorageEngine> Partition<E> {
    /// A partition over `engine`, bounded by `limits`.
    pub fn new(engine: E, limits: StorageLimits) -> Partition<E> {
        Partition {
            engine,
            limits,
            staged: RefCell::new(HashMap::new()),
            owner: Cell::new((0, 0)),
            timetags: Cell::new(None),
        }
    }

    /// Tags local writes with timetags of cluster `cluster_id` (the table
    /// is duplicated, to or from another cluster), or stops tagging them
    /// (`None`). Writes received by duplication carry their timetags
    /// either way.
    pub fn set_timetags(&self, cluster_id: Option<u8>) {
        self.timetags.set(cluster_id);
    }

    /// The cluster id local writes are tagged with, if they are.
    pub fn timetags(&self) -> Option<u8> {
        self.timetags.get()
    }

    /// Makes the partition own the keys of partition `index` of `count`.
    pub fn set_owner(&self, count: u32, index: u32) {
        self.owner.set((count, index));
    }

    /// Whether `hash_key` (with `sort_key`) belongs to this partition.
    pub fn owns(&self, hash_key: &[u8], sort_key: &[u8]) -> bool {
        let (count, index) = self.owner.get();
        count == 0
            || crate::key::partition_index(crate::key::partition_hash(hash_key, sort_key), count)
                == index
    }

    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The engine underneath, the partition given up (to close it
    /// elsewhere).
    pub fn into_engine(self) -> E {
        self.engine
    }

    /// The bounds this partition enforces.
    pub fn limits(&self) -> &StorageLimits {
        &self.limits
    }

    /// Executes one data request at `now_epoch_s`. Scanner requests and
    /// route queries are the server's (see [`Partition::scan_batch`]) and
    /// are answered `InvalidArgument` here.
    pub fn execute(&self, request: &Request, now_epoch_s: u32) -> Response {
        if request.is_write() {
            let (batch, body) = self.prepare_write(request, now_epoch_s)?;
            if !batch.is_empty() {
                self.engine.write(&batch)?;
            }
            return Ok(body);
        }
        match request {
            Request::Get(key) => self.get(key, now_epoch_s),
            Request::Exist(key) => self.exist(key, now_epoch_s),
            Request::Ttl(key) => self.ttl(key, now_epoch_s),
            Request::MultiGet(request) => self.multi_get(request, now_epoch_s),
            Request::SortKeyCount { hash_key } => self.sortkey_count(hash_key, now_epoch_s),
            Request::BatchGet { keys } => self.batch_get(keys, now_epoch_s),
            Request::Set { .. }
            | Request::Del(_)
            | Request::MultiSet { .. }
            | Request::MultiDel { .. }
            | Request::Incr { .. }
            | Request::CheckAndSet(_)
            | Request::CheckAndMutate(_)
            | Request::Duplicate(_) => unreachable!("writes are prepared above"),
            Request::GetScanner(_)
            | Request::Scan { .. }
            | Request::ClearScanner { .. }
            | Request::QueryRoute { .. }
            | Request::CreateTable(_)
            | Request::DropTable { .. }
            | Request::RecallTable { .. }
            | Request::ListTables { .. }
            | Request::DescribeTable { .. }
            | Request::ListNodes
            | Request::ClusterInfo
            | Request::SetAppEnvs { .. }
            | Request::GetAppEnvs { .. }
            | Request::Beacon(_)
            | Request::RemoveSecondary { .. }
            | Request::UpgradeLearner { .. }
            | Request::SwitchPrimary { .. }
            | Request::Balancer(_)
            | Request::Backup(_)
            | Request::PartitionSplit(_)
            | Request::Peer(_)
            | Request::Dup(_) => Err(OpError::invalid_argument(format!(
                "{} is served by the server, not by partition storage",
                request.name()
            ))),
        }
    }

    /// Turns a write request into the puts and deletes it makes (values
    /// carry absolute expire times, so the batch is idempotent) and the
    /// reply to send once they are applied. Nothing is written. An empty
    /// batch means the write changes nothing (a failed check).
    ///
    /// On a duplicated table the timetags' clock is the start of second
    /// `now_epoch_s`; [`Partition::prepare_tagged_write`] takes a finer one.
    pub fn prepare_write(
        &self,
        request: &Request,
        now_epoch_s: u32,
    ) -> Result<(WriteBatch, ResponseBody), OpError> {
        self.prepare_tagged_write(
            request,
            now_epoch_s,
            timetag::unix_us_of_epoch_s(now_epoch_s),
        )
    }

    /// [`Partition::prepare_write`] with the wall clock in Unix
    /// microseconds for timetags: on a duplicated table each record the
    /// batch writes or deletes also gets its companion timetag record,
    /// newer than the one it replaces, staged writes included
    /// (**local-write-newest**). A `Duplicate` request is prepared by
    /// [`Partition::prepare_duplicate`].
    pub fn prepare_tagged_write(
        &self,
        request: &Request,
        now_epoch_s: u32,
        now_unix_us: u64,
    ) -> Result<(WriteBatch, ResponseBody), OpError> {
        if let Request::Duplicate(request) = request {
            return self.prepare_duplicate(request);
        }
        let (mut batch, body) = self.prepare_local_write(request, now_epoch_s)?;
        if let Some(cluster_id) = self.timetags.get() {
            self.tag_local_write(&mut batch, cluster_id, now_unix_us)?;
        }
        Ok((batch, body))
    }

    /// Applies a batch of another cluster's mutations (prepare, then write
    /// to the engine, as [`Partition::execute`] does): see
    /// [`Partition::prepare_duplicate`].
    pub fn duplicate(&self, request: &DuplicateRequest) -> Response {
        let (batch, body) = self.prepare_duplicate(request)?;
        if !batch.is_empty() {
            self.engine.write(&batch)?;
        }
        Ok(body)
    }

    /// Turns a batch of another cluster's committed mutations (their log
    /// payloads, in decree order) into the puts and deletes to apply here,
    /// record by record: a record is applied, with its companion timetag
    /// record, iff its timetag is not older than the one this partition
    /// holds for its key, staged writes and earlier mutations of the batch
    /// included (**dup-last-write-wins**; equal timetags are the same
    /// write shipped again, applied again to the same effect). A record
    /// shipped without a timetag (written before its table was duplicated)
    /// has timetag 0 of the source cluster, older than every tagged write.
    /// A delete leaves a tombstone timetag, so that an older put shipped
    /// later does not bring the key back. The batch is marked as received
    /// from `source_cluster_id`, so that it is never shipped again
    /// (**dup-no-loop**); so are mutations that came to the source by
    /// duplication themselves, which are skipped. Answers `Count`: the
    /// records applied.
    ///
    /// A source cluster id outside 1..=127 or a payload that does not
    /// decode is `INVALID_ARGUMENT`; a key of another partition is
    /// `WRONG_PARTITION`. Either refuses the whole request.
    pub fn prepare_duplicate(
        &self,
        request: &DuplicateRequest,
    ) -> Result<(WriteBatch, ResponseBody), OpError> {
        let source = request.source_cluster_id;
        timetag::validate_cluster_id(source).map_err(|message| {
            OpError::invalid_argument(format!("duplicate from cluster {source}: {message}"))
        })?;
        let mut out = WriteBatch::new();
        // The latest timetag of each key this request touched so far.
        let mut held: HashMap<Vec<u8>, Timetag> = HashMap::new();
        let mut applied: i64 = 0;
        for mutation in &request.mutations {
            if mutation.payload.is_empty() {
                continue;
            }
            let batch = WriteBatch::decode(&mutation.payload).map_err(|error| {
                OpError::invalid_argument(format!(
                    "duplicate: the mutation of decree {} of dup {} does not decode: {}",
                    mutation.decree, request.dup_id, error.message
                ))
            })?;
            if batch.dup_source().is_some() {
                continue;
            }
            let mut tags: HashMap<&[u8], HeldTimetag> = HashMap::new();
            for op in batch.ops() {
                if let WriteOp::Put { raw_key, raw_value } = op {
                    if let Some(data_key) = timetag::data_key_of(raw_key) {
                        tags.insert(data_key, timetag::decode_timetag_value(raw_value)?);
                    }
                }
            }
            for op in batch.ops() {
                let (raw_key, raw_value) = match op {
                    WriteOp::Put { raw_key, raw_value } => (raw_key, Some(raw_value)),
                    WriteOp::Delete { raw_key } => (raw_key, None),
                };
                if timetag::is_timetag_key(raw_key) {
                    continue;
                }
                let Some((hash_key, sort_key)) = key::decode_key(raw_key) else {
                    return Err(OpError::invalid_argument(format!(
                        "duplicate: the mutation of decree {} holds a key that does not decode",
                        mutation.decree
                    )));
                };
                if !self.owns(hash_key, sort_key) {
                    let (count, index) = self.owner.get();
                    return Err(OpError::new(
                        ErrorCode::WrongPartition,
                        format!(
                            "duplicate: the mutation of decree {} holds a key of another partition than {index} of {count}: the two tables' partition counts differ",
                            mutation.decree
                        ),
                    ));
                }
                let incoming = tags
                    .get(raw_key.as_slice())
                    .map_or(timetag::timetag(0, source), |tag| tag.timetag);
                let current = match held.get(raw_key) {
                    Some(tag) => *tag,
                    None => self.held_timetag(raw_key)?,
                };
                if incoming < current {
                    continue;
                }
                match raw_value {
                    Some(raw_value) => out.put(raw_key.clone(), raw_value.clone()),
                    None => out.delete(raw_key.clone()),
                }
                out.put(
                    timetag::timetag_key(raw_key),
                    timetag::encode_timetag_value(HeldTimetag {
                        timetag: incoming,
                        deleted: raw_value.is_none(),
                    }),
                );
                held.insert(raw_key.clone(), incoming);
                applied += 1;
            }
        }
        if !out.is_empty() {
            out.set_dup_source(source);
        }
        Ok((out, ResponseBody::Count(applied)))
    }

    /// The latest timetag of the record under `raw_key` as the next write
    /// sees it (staged writes first); 0 when it has none.
    pub fn held_timetag(&self, raw_key: &[u8]) -> Result<Timetag, OpError> {
        Ok(self
            .read_latest_raw(&timetag::timetag_key(raw_key))?
            .map(|value| timetag::decode_timetag_value(&value))
            .transpose()?
            .map_or(0, |held| held.timetag))
    }

    /// Adds to a local write's `batch` the companion timetag record of
    /// each record it writes or deletes, each newer than the key's latest
    /// (**local-write-newest**).
    fn tag_local_write(
        &self,
        batch: &mut WriteBatch,
        cluster_id: u8,
        now_unix_us: u64,
    ) -> Result<(), OpError> {
        // Each key once, as the batch leaves it (a later operation on the
        // same key wins).
        let mut last: Vec<(&[u8], bool)> = Vec::new();
        for op in batch.ops() {
            let (raw_key, deleted) = match op {
                WriteOp::Put { raw_key, .. } => (raw_key.as_slice(), false),
                WriteOp::Delete { raw_key } => (raw_key.as_slice(), true),
            };
            match last.iter_mut().find(|(key, _)| *key == raw_key) {
                Some(entry) => entry.1 = deleted,
                None => last.push((raw_key, deleted)),
            }
        }
        let mut companions = Vec::with_capacity(last.len());
        for (raw_key, deleted) in last {
            let held = self.held_timetag(raw_key)?;
            companions.push((
                timetag::timetag_key(raw_key),
                timetag::encode_timetag_value(HeldTimetag {
                    timetag: timetag::next_local_timetag(held, now_unix_us, cluster_id),
                    deleted,
                }),
            ));
        }
        for (raw_key, raw_value) in companions {
            batch.put(raw_key, raw_value);
        }
        Ok(())
    }

    /// The puts and deletes of a local write, without timetags.
    fn prepare_local_write(
        &self,
        request: &Request,
        now_epoch_s: u32,
    ) -> Result<(WriteBatch, ResponseBody), OpError> {
        match request {
            Request::Set {
                key,
                value,
                ttl_seconds,
            } => self.set(key, value, *ttl_seconds, now_epoch_s),
            Request::Del(key) => self.del(key),
            Request::MultiSet {
                hash_key,
                kvs,
                ttl_seconds,
            } => self.multi_set(hash_key, kvs, *ttl_seconds, now_epoch_s),
            Request::MultiDel {
                hash_key,
                sort_keys,
            } => self.multi_del(hash_key, sort_keys, now_epoch_s),
            Request::Incr {
                key,
                increment,
                ttl_seconds,
            } => self.incr(key, *increment, *ttl_seconds, now_epoch_s),
            Request::CheckAndSet(request) => self.check_and_set(request, now_epoch_s),
            Request::CheckAndMutate(request) => self.check_and_mutate(request, now_epoch_s),
            other => Err(OpError::invalid_argument(format!(
                "{} is not a write",
                other.name()
            ))),
        }
    }

    /// Records `batch` (about to be logged under `decree`) as staged, so
    /// later prepares see it.
    pub fn stage(&self, decree: i64, batch: &WriteBatch) {
        let mut staged = self.staged.borrow_mut();
        for op in batch.ops() {
            match op {
                WriteOp::Put { raw_key, raw_value } => {
                    staged.insert(raw_key.clone(), (decree, Some(raw_value.clone())))
                }
                WriteOp::Delete { raw_key } => staged.insert(raw_key.clone(), (decree, None)),
            };
        }
    }

    /// Writes `batch` (durable in the log under its decree) to the engine,
    /// with its decree, and forgets what it staged.
    pub fn apply(&self, batch: &WriteBatch) -> Result<(), OpError> {
        self.engine.write(batch)?;
        if let Some(decree) = batch.decree() {
            let mut staged = self.staged.borrow_mut();
            for op in batch.ops() {
                let raw_key = match op {
                    WriteOp::Put { raw_key, .. } | WriteOp::Delete { raw_key } => raw_key,
                };
                if staged
                    .get(raw_key)
                    .is_some_and(|(staged_decree, _)| *staged_decree <= decree)
                {
                    staged.remove(raw_key);
                }
            }
        }
        Ok(())
    }

    /// Forgets every staged write (their log writes failed).
    pub fn discard_staged(&self) {
        self.staged.borrow_mut().clear();
    }

    /// The live record under `raw_key` as the next write sees it: the
    /// latest staged write if there is one, else the engine's.
    fn read_latest(&self, raw_key: &[u8], now_epoch_s: u32) -> Result<Option<LiveValue>, OpError> {
        let Some(raw_value) = self.read_latest_raw(raw_key)? else {
            return Ok(None);
        };
        Ok(
            live_value(&raw_value, now_epoch_s)?.map(|(expire_ts, user_data)| LiveValue {
                expire_ts,
                user_data: user_data.to_vec(),
            }),
        )
    }

    /// The raw value under `raw_key` as the next write sees it: the latest
    /// staged write if there is one, else the engine's.
    fn read_latest_raw(&self, raw_key: &[u8]) -> Result<Option<Vec<u8>>, OpError> {
        let staged = self
            .staged
            .borrow()
            .get(raw_key)
            .map(|(_, value)| value.clone());
        match staged {
            Some(value) => Ok(value),
            None => self.engine.get(raw_key),
        }
    }

    /// The live record under `raw_key`, if any.
    pub(super) fn read_live(
        &self,
        raw_key: &[u8],
        now_epoch_s: u32,
    ) -> Result<Option<LiveValue>, OpError> {
        let Some(raw_value) = self.engine.get(raw_key)? else {
            return Ok(None);
        };
        Ok(
            live_value(&raw_value, now_epoch_s)?.map(|(expire_ts, user_data)| LiveValue {
                expire_ts,
                user_data: user_data.to_vec(),
            }),
        )
    }

    fn get(&self, key: &Key, now_epoch_s: u32) -> Response {
        let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
        match self.read_live(&raw_key, now_epoch_s)? {
            Some(live) => Ok(ResponseBody::Value(live.user_data)),
            None => Err(not_found()),
        }
    }

    fn set(&self, key: &Key, value: &[u8], ttl_seconds: u32, now_epoch_s: u32) -> Prepared {
        let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
        let mut batch = WriteBatch::new();
        batch.put(
            raw_key,
            encode_value(expire_ts_for_ttl(ttl_seconds, now_epoch_s), value),
        );
        Ok((batch, ResponseBody::Done))
    }

    fn del(&self, key: &Key) -> Prepared {
        let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
        let mut batch = WriteBatch::new();
        batch.delete(raw_key);
        Ok((batch, ResponseBody::Done))
    }

    fn exist(&self, key: &Key, now_epoch_s: u32) -> Response {
        let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
        Ok(ResponseBody::Exist(
            self.read_live(&raw_key, now_epoch_s)?.is_some(),
        ))
    }

    fn ttl(&self, key: &Key, now_epoch_s: u32) -> Response {
        let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
        let live = self
            .read_live(&raw_key, now_epoch_s)?
            .ok_or_else(not_found)?;
        if live.expire_ts == 0 {
            return Ok(ResponseBody::Ttl(-1));
        }
        let left_s = live.expire_ts - now_epoch_s; // Live, so expire_ts > now_epoch_s.
        Ok(ResponseBody::Ttl(i32::try_from(left_s).unwrap_or(i32::MAX)))
    }

    fn multi_set(
        &self,
        hash_key: &[u8],
        kvs: &[SortKeyValue],
        ttl_seconds: u32,
        now_epoch_s: u32,
    ) -> Prepared {
        check_hash_key_for_multi(hash_key, "multi_set")?;
        if kvs.is_empty() {
            return Err(OpError::invalid_argument(
                "multi_set needs at least one sort key",
            ));
        }
        let expire_ts = expire_ts_for_ttl(ttl_seconds, now_epoch_s);
        let mut batch = WriteBatch::new();
        for kv in kvs {
            batch.put(
                encode_key(hash_key, &kv.sort_key)?,
                encode_value(expire_ts, &kv.value),
            );
        }
        Ok((batch, ResponseBody::Done))
    }

    fn multi_del(&self, hash_key: &[u8], sort_keys: &[Vec<u8>], now_epoch_s: u32) -> Prepared {
        check_hash_key_for_multi(hash_key, "multi_del")?;
        if sort_keys.is_empty() {
            return Err(OpError::invalid_argument(
                "multi_del needs at least one sort key",
            ));
        }
        let mut unique: Vec<&[u8]> = sort_keys.iter().map(Vec::as_slice).collect();
        unique.sort_unstable();
        unique.dedup();
        let mut batch = WriteBatch::new();
        let mut existed: i64 = 0;
        for sort_key in unique {
            let raw_key = encode_key(hash_key, sort_key)?;
            if self.read_latest(&raw_key, now_epoch_s)?.is_some() {
                existed += 1;
            }
            batch.delete(raw_key);
        }
        Ok((batch, ResponseBody::Count(existed)))
    }

    fn incr(&self, key: &Key, increment: i64, ttl_seconds: i32, now_epoch_s: u32) -> Prepared {
        let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
        let (base, old_expire_ts) = match self.read_latest(&raw_key, now_epoch_s)? {
            None => (0, 0),
            Some(live) if live.user_data.is_empty() => (0, live.expire_ts),
            Some(live) => (
                parse_i64(&live.user_data).ok_or_else(|| {
                    OpError::invalid_argument(
                        "incr: the stored value is not a decimal 64-bit integer",
                    )
                })?,
                live.expire_ts,
            ),
        };
        let new_value = base.checked_add(increment).ok_or_else(|| {
            OpError::invalid_argument(format!(
                "incr: {base} + {increment} overflows a 64-bit integer"
            ))
        })?;
        let expire_ts = match ttl_seconds.cmp(&0) {
            Ordering::Equal => old_expire_ts,
            Ordering::Greater => expire_ts_for_ttl(ttl_seconds.unsigned_abs(), now_epoch_s),
            Ordering::Less => 0,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            raw_key,
            encode_value(expire_ts, new_value.to_string().as_bytes()),
        );
        Ok((batch, ResponseBody::Incr(new_value)))
    }

    fn check_and_set(&self, request: &CheckAndSetRequest, now_epoch_s: u32) -> Prepared {
        let check_raw_key = encode_key(&request.hash_key, &request.check_sort_key)?;
        let set_raw_key = encode_key(&request.hash_key, &request.set_sort_key)?;
        let check_value = self.read_latest(&check_raw_key, now_epoch_s)?;
        let passed = check_passes(
            request.check_type,
            &request.check_operand,
            check_value.as_ref(),
        )?;
        let mut batch = WriteBatch::new();
        if passed {
            let expire_ts = expire_ts_for_ttl(request.set_ttl_seconds, now_epoch_s);
            batch.put(set_raw_key, encode_value(expire_ts, &request.set_value));
        }
        let body = ResponseBody::CheckAndSet(check_result(
            passed,
            request.return_check_value,
            check_value,
        ));
        Ok((batch, body))
    }

    fn check_and_mutate(&self, request: &CheckAndMutateRequest, now_epoch_s: u32) -> Prepared {
        if request.mutations.is_empty() {
            return Err(OpError::invalid_argument(
                "check_and_mutate needs at least one mutation",
            ));
        }
        let check_raw_key = encode_key(&request.hash_key, &request.check_sort_key)?;
        let mut batch = WriteBatch::new();
        for mutation in &request.mutations {
            match mutation {
                Mutation::Put {
                    sort_key,
                    value,
                    ttl_seconds,
                } => batch.put(
                    encode_key(&request.hash_key, sort_key)?,
                    encode_value(expire_ts_for_ttl(*ttl_seconds, now_epoch_s), value),
                ),
                Mutation::Delete { sort_key } => {
                    batch.delete(encode_key(&request.hash_key, sort_key)?)
                }
            }
        }
        let check_value = self.read_latest(&check_raw_key, now_epoch_s)?;
        let passed = check_passes(
            request.check_type,
            &request.check_operand,
            check_value.as_ref(),
        )?;
        if !passed {
            batch = WriteBatch::new();
        }
        let body = ResponseBody::CheckAndSet(check_result(
            passed,
            request.return_check_value,
            check_value,
        ));
        Ok((batch, body))
    }

    fn batch_get(&self, keys: &[Key], now_epoch_s: u32) -> Response {
        let mut records = Vec::new();
        for key in keys {
            let raw_key = encode_key(&key.hash_key, &key.sort_key)?;
            if let Some(live) = self.read_live(&raw_key, now_epoch_s)? {
                records.push(Record {
                    hash_key: key.hash_key.clone(),
                    sort_key: key.sort_key.clone(),
                    value: live.user_data,
                });
            }
        }
        Ok(ResponseBody::BatchGet(records))
    }
}

/// Decodes a raw value: `Some((expire_ts, user_data))` when live, `None`
/// when expired, `StorageError` when shorter than its header.
pub(super) fn live_value(
    raw_value: &[u8],
    now_epoch_s: u32,
) -> Result<Option<(u32, &[u8])>, OpError> {
    let (expire_ts, user_data) = key::decode_value(raw_value).ok_or_else(|| {
        storage_error(
            "corrupt stored value",
            format!(
                "{} bytes is shorter than the 4-byte header",
                raw_value.len()
            ),
        )
    })?;
    Ok((!key::is_expired(expire_ts, now_epoch_s)).then_some((expire_ts, user_data)))
}

/// Multi-record operations need a non-empty hash key of legal length.
pub(super) fn check_hash_key_for_multi(hash_key: &[u8], operation: &str) -> Result<(), OpError> {
    if hash_key.is_empty() {
        return Err(OpError::invalid_argument(format!(
            "{operation} needs a non-empty hash key"
        )));
    }
    check_hash_key(hash_key)
}

fn not_found() -> OpError {
    OpError::new(
        ErrorCode::NotFound,
        "the record does not exist or has expired",
    )
}

/// A decimal 64-bit integer (optional sign, digits, nothing else).
pub(super) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Whether the check of check_and_set / check_and_mutate passes.
/// Existence checks treat a missing value as absent; every other check
/// fails on a missing value; int checks fail with `InvalidArgument` when
/// the value or the operand is not a decimal 64-bit integer.
fn check_passes(
    check_type: CheckType,
    operand: &[u8],
    value: Option<&LiveValue>,
) -> Result<bool, OpError> {
    let value = value.map(|live| live.user_data.as_slice());
    let passed = match check_type {
        CheckType::NoCheck => true,
        CheckType::ValueNotExist => value.is_none(),
        CheckType::ValueNotExistOrEmpty => value.is_none_or(<[u8]>::is_empty),
        CheckType::ValueExist => value.is_some(),
        CheckType::ValueNotEmpty => value.is_some_and(|value| !value.is_empty()),
        CheckType::ValueMatchAnywhere => value.is_some_and(|value| {
            operand.is_empty() || value.windows(operand.len()).any(|window| window == operand)
        }),
        CheckType::ValueMatchPrefix => value.is_some_and(|value| value.starts_with(operand)),
        CheckType::ValueMatchPostfix => value.is_some_and(|value| value.ends_with(operand)),
        CheckType::ValueBytesLess
        | CheckType::ValueBytesLessOrEqual
        | CheckType::ValueBytesEqual
        | CheckType::ValueBytesGreaterOrEqual
        | CheckType::ValueBytesGreater => {
            value.is_some_and(|value| ordering_passes(check_type, value.cmp(operand)))
        }
        CheckType::ValueIntLess
        | CheckType::ValueIntLessOrEqual
        | CheckType::ValueIntEqual
        | CheckType::ValueIntGreaterOrEqual
        | CheckType::ValueIntGreater => match value {
            None => false,
            Some(value) => {
                let value = parse_i64(value).ok_or_else(|| {
                    OpError::invalid_argument("check value is not a decimal 64-bit integer")
                })?;
                let operand = parse_i64(operand).ok_or_else(|| {
                    OpError::invalid_argument("check operand is not a decimal 64-bit integer")
                })?;
                ordering_passes(check_type, value.cmp(&operand))
            }
        },
    };
    Ok(passed)
}

/// Whether `value.cmp(operand)` satisfies a comparison check type.
fn ordering_passes(check_type: CheckType, ordering: Ordering) -> bool {
    match check_type {
        CheckType::ValueBytesLess | CheckType::ValueIntLess => ordering == Ordering::Less,
        CheckType::ValueBytesLessOrEqual | CheckType::ValueIntLessOrEqual => {
            ordering != Ordering::Greater
        }
        CheckType::ValueBytesEqual | CheckType::ValueIntEqual => ordering == Ordering::Equal,
        CheckType::ValueBytesGreaterOrEqual | CheckType::ValueIntGreaterOrEqual => {
            ordering != Ordering::Less
        }
        CheckType::ValueBytesGreater | CheckType::ValueIntGreater => ordering == Ordering::Greater,
        _ => false,
    }
}

fn check_result(
    passed: bool,
    return_check_value: bool,
    check_value: Option<LiveValue>,
) -> CheckAndSetResult {
    if !return_check_value {
        return CheckAndSetResult {
            set_succeeded: passed,
            ..CheckAndSetResult::default()
        };
    }
    CheckAndSetResult {
        set_succeeded: passed,
        check_value_returned: true,
        check_value_exist: check_value.is_some(),
        check_value: check_value.map(|live| live.user_data).unwrap_or_default(),
    }
}
