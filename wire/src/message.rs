//! Markab's data-plane messages as plain Rust values.
//!
//! These are the types the client, the server and the storage layer share. The
//! wire form of each is a flatbuffers table (see `schema/markab.fbs`); `codec`
//! converts between the two, verifying every received buffer first.
//!
//! Times travel as *relative* TTLs (`ttl_seconds`); the node that executes a
//! write turns them into absolute expire times with its own clock, so client
//! clocks never matter. See docs/DESIGN.md, "Wire".

/// Typed error codes carried by every response. Numbering is wire-visible:
/// never renumber, only append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// The record does not exist or has expired (get, ttl).
    NotFound = 1,
    /// An argument is out of range or malformed; `message` says which.
    InvalidArgument = 2,
    /// The request names a table this node does not know.
    UnknownTable = 3,
    /// The request names a partition this node does not host.
    UnknownPartition = 4,
    /// The partition lives on another shard of this node; `message` holds
    /// the `host:port` of that shard's listener.
    WrongShard = 5,
    /// The request body is larger than the node's configured request bound.
    RequestTooLarge = 6,
    /// The frame could not be decoded (bad header, checksum, flatbuffer).
    /// The connection is closed after this reply.
    BadFrame = 7,
    /// The message kind in the frame header is not one this peer accepts.
    UnknownKind = 8,
    /// The scanner context does not exist (never created, cleared, or expired).
    ScannerNotFound = 9,
    /// A bounded resource (for example the shard's scanner table) is full.
    Busy = 10,
    /// The request's deadline passed before it was served.
    Timeout = 11,
    /// The node is shutting down.
    ShuttingDown = 12,
    /// The storage engine failed; `message` has its text.
    StorageError = 13,
    /// An unexpected internal error; `message` has details.
    Internal = 14,
    /// The partition hash in the envelope does not match the key.
    WrongPartition = 15,
    /// create_table: a table with this name already exists.
    TableExists = 16,
    /// Not enough alive nodes for the request (for example to place a
    /// table's replicas).
    NotEnoughNodes = 17,
    /// The node does not host this partition (any more); the client should
    /// refresh its route from meta.
    NotHosted = 18,
    /// A replication request names a ballot older than the partition's
    /// current one (for example a RemoveSecondary from a deposed primary);
    /// `message` names both ballots.
    StaleBallot = 19,
    /// The replica is not serving as the partition's primary (not the
    /// primary, not activated yet, or its lease expired). The request was
    /// not executed: refresh the route and retry.
    NotPrimary = 20,
    /// The write got a decree but its primary changed before it committed:
    /// it may or may not take effect. Never retried automatically.
    UnknownOutcome = 21,
    /// The partition has fewer alive replicas than meta's
    /// `replica_count_min_alive`: writes are refused until it recovers.
    NotEnoughReplicas = 22,
    /// The request's route has another partition count than the
    /// partition's replica (a split changed it): refresh the route and
    /// resend. Not executed.
    StaleRoute = 23,
    /// The key's partition is splitting and the key moves to the new
    /// partition: retry shortly. Not executed.
    Splitting = 24,
    /// The meta server that answered is not its group's leader (meta high
    /// availability, docs/meta.md): `message` holds the leader's
    /// `host:port`, empty while no leader is known. Not executed: ask the
    /// leader.
    NotLeader = 25,
}

impl ErrorCode {
    /// All codes, in wire order.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::Ok,
        ErrorCode::NotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::UnknownTable,
        ErrorCode::UnknownPartition,
        ErrorCode::WrongShard,
        ErrorCode::RequestTooLarge,
        ErrorCode::BadFrame,
        ErrorCode::UnknownKind,
        ErrorCode::ScannerNotFound,
        ErrorCode::Busy,
        ErrorCode::Timeout,
        ErrorCode::ShuttingDown,
        ErrorCode::StorageError,
        ErrorCode::Internal,
        ErrorCode::WrongPartition,
        ErrorCode::TableExists,
        ErrorCode::NotEnoughNodes,
        ErrorCode::NotHosted,
        ErrorCode::StaleBallot,
        ErrorCode::NotPrimary,
        ErrorCode::UnknownOutcome,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::StaleRoute,
        ErrorCode::Splitting,
        ErrorCode::NotLeader,
    ];

    /// The code with this wire value, if any.
    pub fn from_i16(value: i16) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| *code as i16 == value)
    }

    /// A stable upper-snake name for logs and the shell, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "OK",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::UnknownTable => "UNKNOWN_TABLE",
            ErrorCode::UnknownPartition => "UNKNOWN_PARTITION",
            ErrorCode::WrongShard => "WRONG_SHARD",
            ErrorCode::RequestTooLarge => "REQUEST_TOO_LARGE",
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::UnknownKind => "UNKNOWN_KIND",
            ErrorCode::ScannerNotFound => "SCANNER_NOT_FOUND",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::WrongPartition => "WRONG_PARTITION",
            ErrorCode::TableExists => "TABLE_EXISTS",
            ErrorCode::NotEnoughNodes => "NOT_ENOUGH_NODES",
            ErrorCode::NotHosted => "NOT_HOSTED",
            ErrorCode::StaleBallot => "STALE_BALLOT",
            ErrorCode::NotPrimary => "NOT_PRIMARY",
            ErrorCode::UnknownOutcome => "UNKNOWN_OUTCOME",
            ErrorCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            ErrorCode::StaleRoute => "STALE_ROUTE",
            ErrorCode::Splitting => "SPLITTING",
            ErrorCode::NotLeader => "NOT_LEADER",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed operation: a code and a human-readable explanation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OpError {
    pub code: ErrorCode,
    pub message: String,
}

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> OpError {
        OpError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> OpError {
        OpError::new(ErrorCode::InvalidArgument, message)
    }
}

/// Where a request is going: table (app) id and partition index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gpid {
    pub app_id: i32,
    pub partition_index: i32,
}

/// Per-request envelope fields, beside the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Chosen by the client, unique among its in-flight requests on one
    /// connection; the response carries it back (responses may be reordered).
    pub request_id: u64,
    /// The client's deadline for this request, in milliseconds (0 = none).
    pub timeout_ms: u32,
    pub gpid: Gpid,
    /// Pegasus CRC64 of the request's hash key (0 where the request has none).
    pub partition_hash: u64,
    /// The partition count of the route the client sent by (0 = not
    /// sent): the route's version. A node whose replica has another count
    /// answers `STALE_ROUTE`.
    pub partition_count: i32,
}

/// A record address: hash key and sort key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub hash_key: Vec<u8>,
    pub sort_key: Vec<u8>,
}

impl Key {
    pub fn new(hash_key: impl Into<Vec<u8>>, sort_key: impl Into<Vec<u8>>) -> Key {
        Key {
            hash_key: hash_key.into(),
            sort_key: sort_key.into(),
        }
    }
}

/// Pattern filters on hash keys or sort keys (wire values are Pegasus's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FilterType {
    #[default]
    NoFilter = 0,
    MatchAnywhere = 1,
    MatchPrefix = 2,
    MatchPostfix = 3,
}

/// A filter: a type and its pattern. `NoFilter` ignores the pattern; an
/// empty pattern matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub kind: FilterType,
    pub pattern: Vec<u8>,
}

impl Filter {
    pub fn none() -> Filter {
        Filter::default()
    }

    pub fn new(kind: FilterType, pattern: impl Into<Vec<u8>>) -> Filter {
        Filter {
            kind,
            pattern: pattern.into(),
        }
    }

    /// Whether `candidate` passes this filter.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let pattern = self.pattern.as_slice();
        match self.kind {
            FilterType::NoFilter => true,
            _ if pattern.is_empty() => true,
            FilterType::MatchAnywhere => candidate.windows(pattern.len()).any(|w| w == pattern),
            FilterType::MatchPrefix => candidate.starts_with(pattern),
            FilterType::MatchPostfix => candidate.ends_with(pattern),
        }
    }
}

/// The 18 check types of check_and_set / check_and_mutate (Pegasus numbering).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CheckType {
    #[default]
    NoCheck = 0,
    ValueNotExist = 1,
    ValueNotExistOrEmpty = 2,
    ValueExist = 3,
    ValueNotEmpty = 4,
    ValueMatchAnywhere = 5,
    ValueMatchPrefix = 6,
    ValueMatchPostfix = 7,
    ValueBytesLess = 8,
    ValueBytesLessOrEqual = 9,
    ValueBytesEqual = 10,
    ValueBytesGreaterOrEqual = 11,
    ValueBytesGreater = 12,
    ValueIntLess = 13,
    ValueIntLessOrEqual = 14,
    ValueIntEqual = 15,
    ValueIntGreaterOrEqual = 16,
    ValueIntGreater = 17,
}

impl CheckType {
    pub const ALL: [CheckType; 18] = [
        CheckType::NoCheck,
        CheckType::ValueNotExist,
        CheckType::ValueNotExistOrEmpty,
        CheckType::ValueExist,
        CheckType::ValueNotEmpty,
        CheckType::ValueMatchAnywhere,
        CheckType::ValueMatchPrefix,
        CheckType::ValueMatchPostfix,
        CheckType::ValueBytesLess,
        CheckType::ValueBytesLessOrEqual,
        CheckType::ValueBytesEqual,
        CheckType::ValueBytesGreaterOrEqual,
        CheckType::ValueBytesGreater,
        CheckType::ValueIntLess,
        CheckType::ValueIntLessOrEqual,
        CheckType::ValueIntEqual,
        CheckType::ValueIntGreaterOrEqual,
        CheckType::ValueIntGreater,
    ];

    pub fn from_u8(value: u8) -> Option<CheckType> {
        CheckType::ALL.get(value as usize).copied()
    }
}

/// A record with its value, as returned by reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SortKeyValue {
    pub sort_key: Vec<u8>,
    /// Empty when the request asked for `no_value`.
    pub value: Vec<u8>,
}

/// A fully addressed record, as returned by batch_get and scans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    pub hash_key: Vec<u8>,
    pub sort_key: Vec<u8>,
    /// Empty when the request asked for `no_value`.
    pub value: Vec<u8>,
}

/// multi_get: point lookups of `sort_keys` when that list is non-empty,
/// otherwise a range read of the sort keys of `hash_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiGetRequest {
    pub hash_key: Vec<u8>,
    /// Non-empty: read exactly these sort keys (range fields are ignored).
    pub sort_keys: Vec<Vec<u8>>,
    /// Most records returned; `<= 0` means the server's bound.
    pub max_kv_count: i32,
    /// Most key+value bytes returned; `<= 0` means the server's bound.
    pub max_kv_size: i32,
    pub no_value: bool,
    /// Range start; empty = the first sort key.
    pub start_sort_key: Vec<u8>,
    /// Range stop; empty = past the last sort key.
    pub stop_sort_key: Vec<u8>,
    pub start_inclusive: bool,
    pub stop_inclusive: bool,
    pub sort_key_filter: Filter,
    /// Return the records of the range from its end backwards (the result
    /// is still sorted ascending, as Pegasus does).
    pub reverse: bool,
}

impl MultiGetRequest {
    /// A range read of every sort key of `hash_key`, with Pegasus's defaults
    /// (start inclusive, stop exclusive, 100 records, 1,000,000 bytes).
    pub fn range(hash_key: impl Into<Vec<u8>>) -> MultiGetRequest {
        MultiGetRequest {
            hash_key: hash_key.into(),
            sort_keys: Vec::new(),
            max_kv_count: 100,
            max_kv_size: 1_000_000,
            no_value: false,
            start_sort_key: Vec::new(),
            stop_sort_key: Vec::new(),
            start_inclusive: true,
            stop_inclusive: false,
            sort_key_filter: Filter::none(),
            reverse: false,
        }
    }
}

/// One put or delete of check_and_mutate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put {
        sort_key: Vec<u8>,
        value: Vec<u8>,
        ttl_seconds: u32,
    },
    Delete {
        sort_key: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckAndSetRequest {
    pub hash_key: Vec<u8>,
    pub check_sort_key: Vec<u8>,
    pub check_type: CheckType,
    pub check_operand: Vec<u8>,
    /// The sort key to set (may equal `check_sort_key`).
    pub set_sort_key: Vec<u8>,
    pub set_value: Vec<u8>,
    pub set_ttl_seconds: u32,
    pub return_check_value: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckAndMutateRequest {
    pub hash_key: Vec<u8>,
    pub check_sort_key: Vec<u8>,
    pub check_type: CheckType,
    pub check_operand: Vec<u8>,
    /// Must not be empty.
    pub mutations: Vec<Mutation>,
    pub return_check_value: bool,
}

/// What a scanner walks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanRange {
    /// Ordered scan of one hash key's sort keys in `[start, stop]` (ends
    /// per the inclusive flags; an empty stop = to the end of the hash key).
    Hash {
        hash_key: Vec<u8>,
        start_sort_key: Vec<u8>,
        stop_sort_key: Vec<u8>,
    },
    /// Unordered scan of every record of the partition.
    Full,
}

/// get_scanner: open a server-side cursor and return its first batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    pub range: ScanRange,
    pub start_inclusive: bool,
    pub stop_inclusive: bool,
    pub hash_key_filter: Filter,
    pub sort_key_filter: Filter,
    /// Records per batch; `<= 0` means the server's default, and the server
    /// caps it at its bound.
    pub batch_size: i32,
    pub no_value: bool,
    /// Count the matching records instead of returning them.
    pub only_return_count: bool,
}

impl ScanRequest {
    /// An unfiltered scan of `range` with batches of 100.
    pub fn new(range: ScanRange) -> ScanRequest {
        ScanRequest {
            range,
            start_inclusive: true,
            stop_inclusive: false,
            hash_key_filter: Filter::none(),
            sort_key_filter: Filter::none(),
            batch_size: 100,
            no_value: false,
            only_return_count: false,
        }
    }
}

/// Scanner context id meaning "the scan is complete; no cursor remains".
pub const SCAN_CONTEXT_COMPLETE: i64 = -1;

/// A data-plane request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Get(Key),
    Set {
        key: Key,
        value: Vec<u8>,
        /// 0 = never expires.
        ttl_seconds: u32,
    },
    Del(Key),
    Exist(Key),
    Ttl(Key),
    MultiGet(MultiGetRequest),
    MultiSet {
        hash_key: Vec<u8>,
        kvs: Vec<SortKeyValue>,
        ttl_seconds: u32,
    },
    MultiDel {
        hash_key: Vec<u8>,
        sort_keys: Vec<Vec<u8>>,
    },
    SortKeyCount {
        hash_key: Vec<u8>,
    },
    Incr {
        key: Key,
        increment: i64,
        /// 0 keeps the old TTL, > 0 sets a new one, < 0 clears it.
        ttl_seconds: i32,
    },
    CheckAndSet(CheckAndSetRequest),
    CheckAndMutate(CheckAndMutateRequest),
    BatchGet {
        keys: Vec<Key>,
    },
    GetScanner(ScanRequest),
    Scan {
        context_id: i64,
    },
    ClearScanner {
        context_id: i64,
    },
    /// Where the partitions of a table live (answered by meta, and by a
    /// standalone node for the tables in its config).
    QueryRoute {
        table: String,
    },

    // ---- Meta requests (sent to `markab meta`) ----
    /// Create a table. `partition_count` must be a power of two,
    /// `replica_count` within meta's bounds.
    CreateTable(CreateTableRequest),
    /// Drop a table: it disappears at once, its data is kept for
    /// `reserve_seconds` (meta's default when `None`) and can be recalled.
    DropTable {
        table: String,
        reserve_seconds: Option<u32>,
    },
    /// Bring a dropped table back (under `new_name`, or its old name when
    /// empty) while its data is still held.
    RecallTable {
        app_id: i32,
        new_name: String,
    },
    /// The tables; dropped ones (still held) too when `include_dropped`.
    ListTables {
        include_dropped: bool,
    },
    /// A table's info and every partition's configuration.
    DescribeTable {
        table: String,
    },
    /// The nodes meta knows, alive or not.
    ListNodes,
    /// Meta's own summary (address, node and table counts, settings).
    ClusterInfo,
    /// Set (insert or replace) environment entries of a table.
    SetAppEnvs {
        table: String,
        envs: Vec<(String, String)>,
    },
    /// A table's environment entries.
    GetAppEnvs {
        table: String,
    },
    /// A node's periodic report to meta (node → meta); the reply carries
    /// what the node must host and drop.
    Beacon(NodeBeacon),
    /// A primary (at `ballot`) asks meta to remove the secondary `node` it
    /// cannot reach (node → meta). Answered `Done` once the new
    /// configuration is persisted; `STALE_BALLOT` when `ballot` is not the
    /// partition's current one.
    RemoveSecondary {
        gpid: Gpid,
        ballot: i64,
        node: String,
    },
    /// A primary (at `ballot`) asks meta to make the learner `node`, which
    /// caught up, a secondary (node → meta). Answered like RemoveSecondary.
    UpgradeLearner {
        gpid: Gpid,
        ballot: i64,
        node: String,
    },
    /// A primary handing its role over (node → meta): at `ballot`, with no
    /// write in flight, it asks meta to make the secondary `node` the
    /// primary, as the balancer asked it to (`ReplicaAssignment::handoff_to`).
    /// Answered like RemoveSecondary.
    SwitchPrimary {
        gpid: Gpid,
        ballot: i64,
        node: String,
    },
    /// The balancer's administration (shell → meta), answered with pairs.
    Balancer(BalancerRequest),
    /// Cold backups (shell → meta), answered with pairs.
    Backup(BackupRequest),
    /// Partition splits (shell → meta), answered with pairs.
    PartitionSplit(SplitRequest),
    /// A replica-to-replica message (node → node, never answered).
    Peer(PeerRequest),
    /// Duplications between clusters (shell → meta), answered with pairs.
    Dup(DupRequest),
    /// Mutations shipped by another cluster's duplication (node → the
    /// remote partition's primary): a write, answered with `Count` (the
    /// records applied; the others were older than what the partition
    /// holds).
    Duplicate(DuplicateRequest),
}

/// What an operator asks of meta about duplications (docs/duplication.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DupRequest {
    /// Duplicates `table` to table `remote_table` (`table` when empty) of
    /// the cluster whose metas are `remote_metas`; answered with the new
    /// duplication's id.
    Add {
        table: String,
        remote_metas: Vec<String>,
        remote_table: String,
    },
    /// The duplications of `table` (empty: of every table), with their
    /// progress per partition.
    List { table: String },
    /// Stops shipping for now (the nodes keep their logs from the
    /// confirmed decree).
    Pause { id: u64 },
    /// Resumes a paused duplication.
    Start { id: u64 },
    /// Ends a duplication.
    Remove { id: u64 },
}

/// One committed mutation of a duplicated partition: its decree and its
/// log payload exactly as the source's mutation log holds it (an encoded
/// write batch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DupMutation {
    pub decree: i64,
    pub payload: Vec<u8>,
}

/// A batch of one source partition's committed mutations, in decree
/// order, for the same partition of the remote table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DuplicateRequest {
    /// The cluster the mutations were committed in (1..=127).
    pub source_cluster_id: u8,
    /// The source cluster's duplication.
    pub dup_id: u64,
    pub mutations: Vec<DupMutation>,
}

/// Whether a duplication ships (in beacon acks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum DupStatus {
    #[default]
    Running = 0,
    /// Not shipping; the members keep their logs from the confirmed decree.
    Paused = 1,
}

/// A node's report on one partition of a duplication it is primary of
/// (node → meta, in beacons).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DupReport {
    pub dup_id: u64,
    pub gpid: Gpid,
    /// The last decree the remote cluster holds (-1 = none yet).
    pub confirmed_decree: i64,
    /// The partition's committed decree.
    pub committed_decree: i64,
    /// The age of the oldest committed mutation not yet confirmed, in ms
    /// (0 when caught up).
    pub lag_ms: u64,
    pub shipped_records: u64,
    pub shipped_bytes: u64,
    /// Failed shipping attempts since the node became primary.
    pub errors: u64,
    /// The duplication cannot go on; meta marks it failed.
    pub failed: bool,
    /// The last error, or why it failed (empty otherwise).
    pub message: String,
}

/// A partition of a duplicated table a node is primary or secondary of
/// (meta → node, in beacon acks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DupOrder {
    pub dup_id: u64,
    pub gpid: Gpid,
    /// The remote cluster's meta addresses.
    pub remote_metas: Vec<String>,
    pub remote_table: String,
    pub remote_cluster_id: u8,
    pub status: DupStatus,
    /// The last decree the remote cluster confirmed: the primary ships
    /// from the next one, every member keeps its log from there. -1 = none
    /// yet: the primary starts at its last prepared decree and reports it.
    pub confirmed_decree: i64,
}

/// What an operator asks of meta's balancer (docs/balance.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalancerRequest {
    /// The meta function level.
    GetLevel,
    /// Sets the level: `freezed`, `steady` or `lively`.
    SetLevel { level: String },
    /// One balancing round: the planned moves, started when `apply`.
    Balance { apply: bool },
    /// One move given by hand.
    Propose(ProposedMove),
    /// The moves in progress.
    ListMoves,
    /// Moves every replica off `node` and keeps new ones away (`cancel`
    /// takes the node back); answered with its progress.
    RemoveNode { node: String, cancel: bool },
}

/// What an operator asks of meta about partition splits (docs/split.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitRequest {
    /// Doubles `table`'s partitions; `new_count` must be twice the count.
    Start { table: String, new_count: i32 },
    /// The split's progress per partition.
    Query { table: String },
    /// Stops the split for now: the parents serve every key again.
    Pause { table: String },
    /// Resumes a paused split.
    Restart { table: String },
    /// Gives the split up before it commits: the table stays as it was.
    Cancel { table: String },
}

impl SplitRequest {
    pub fn table(&self) -> &str {
        match self {
            SplitRequest::Start { table, .. }
            | SplitRequest::Query { table }
            | SplitRequest::Pause { table }
            | SplitRequest::Restart { table }
            | SplitRequest::Cancel { table } => table,
        }
    }
}

/// A node's report on its replica of a parent partition of a splitting
/// table (in its beacons).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitReport {
    /// The parent partition.
    pub gpid: Gpid,
    /// The split's epoch, as ordered.
    pub epoch: u64,
    /// The replica's ballot.
    pub ballot: i64,
    /// Primary: the decree it fenced at (see `fenced`).
    pub fence_decree: i64,
    /// The decree of this node's copy of the child (see `copied`).
    pub copied_decree: i64,
    /// Why the copy failed (empty otherwise).
    pub message: String,
    /// Primary: fenced, and every decree up to `fence_decree` committed.
    pub fenced: bool,
    /// This node's copy of the child is made, at `copied_decree`.
    pub copied: bool,
}

/// A parent partition of a splitting table (in beacon acks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitOrder {
    pub gpid: Gpid,
    pub new_count: i32,
    pub epoch: u64,
    pub fence_decree: i64,
    /// Meta heard the primary's fence decree (`fence_decree` holds it).
    pub fenced: bool,
}

/// What an operator asks of meta about cold backups (docs/backup.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupRequest {
    /// Backs `table` up to the block store at `url` now; answered with the
    /// new backup's id.
    Start { table: String, url: String },
    /// The backups meta knows of, running, complete or failed (`table`
    /// empty: of every table).
    List { table: String },
    /// One backup, with its progress per partition.
    Query { backup_id: u64 },
    /// Creates table `new_table` (`table` when empty) from the complete
    /// backup `backup_id` of table `table` in the block store at `url`.
    Restore {
        url: String,
        backup_id: u64,
        table: String,
        new_table: String,
    },
    /// A restore's progress per partition.
    QueryRestore { table: String },
    /// Stops the restore of `table` and removes the table.
    CancelRestore { table: String },
    /// Adds a backup policy: meta backs its tables up on its schedule.
    AddPolicy(BackupPolicySpec),
    /// Every backup policy.
    ListPolicies,
    /// One policy and its backups.
    QueryPolicy { name: String },
    /// Changes a policy; absent (empty, 0) fields stay as they are.
    ModifyPolicy(BackupPolicyChange),
    /// Resumes a disabled policy's schedule.
    EnablePolicy { name: String },
    /// Stops a policy's schedule (its backups are kept).
    DisablePolicy { name: String },
}

/// A backup policy (docs/backup.md, "Policies").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupPolicySpec {
    pub name: String,
    /// Table names.
    pub tables: Vec<String>,
    /// The block store.
    pub url: String,
    /// Seconds between two backups of each table.
    pub interval_seconds: u64,
    /// `HH:MM` (UTC): the first backup's time of day.
    pub start_time: String,
    /// Complete backups kept per table; older ones are deleted.
    pub keep: u32,
}

/// A change to a backup policy; empty or 0 fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupPolicyChange {
    pub name: String,
    pub add_tables: Vec<String>,
    pub remove_tables: Vec<String>,
    pub interval_seconds: u64,
    pub start_time: String,
    pub keep: u32,
}

/// A partition meta asks a node to restore (meta → node, in beacon acks):
/// the checkpoint under `prefix` of the store at `url`, checked against its
/// manifest and `decree`, installed as replica `gpid` on shard `shard`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOrder {
    pub backup_id: u64,
    pub gpid: Gpid,
    pub shard: i32,
    pub table: String,
    pub partition_count: i32,
    pub url: String,
    pub prefix: String,
    pub decree: i64,
}

/// A partition meta asks a node to back up (meta → node, in beacon acks):
/// the node's replica, primary at `ballot`, checkpoints and uploads under
/// `prefix` of the block store at `url`, and reports in its beacons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupOrder {
    pub backup_id: u64,
    pub gpid: Gpid,
    pub ballot: i64,
    pub url: String,
    /// The partition's key prefix in the store; the node uploads under a
    /// prefix of its own below it (one per attempt) and reports it.
    pub prefix: String,
}

/// How a node's backup of a partition stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum BackupJobState {
    #[default]
    Running = 0,
    /// Uploaded, manifest last: `BackupReport::prefix` holds a complete
    /// checkpoint at `decree`.
    Done = 1,
    /// Gave up; `BackupReport::message` says why.
    Failed = 2,
}

/// A node's report on one partition backup (node → meta, in beacons).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    pub backup_id: u64,
    pub gpid: Gpid,
    /// The ballot of the order it runs.
    pub ballot: i64,
    pub state: BackupJobState,
    /// The checkpoint's decree (0 until it is taken).
    pub decree: i64,
    pub bytes_done: u64,
    /// 0 until the checkpoint is taken.
    pub bytes_total: u64,
    /// Where this attempt uploads (under the order's prefix).
    pub prefix: String,
    /// Why it failed (empty otherwise).
    pub message: String,
    /// A restore's report (Done once the replica is installed and hosted).
    pub restore: bool,
}

/// A move an operator proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposedMove {
    /// The partition's primary hands its role to the secondary on `to`.
    MovePrimary { gpid: Gpid, to: String },
    /// The partition's replica on `from` moves to `to` (a learner on `to`,
    /// promoted once caught up, then the one on `from` removed).
    CopyReplica {
        gpid: Gpid,
        from: String,
        to: String,
    },
    /// The partition's secondary on `node` is removed (the guardian adds
    /// one elsewhere when the partition is then short).
    RemoveReplica { gpid: Gpid, node: String },
}

/// Parameters of create_table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTableRequest {
    pub table: String,
    pub partition_count: i32,
    pub replica_count: i32,
    pub envs: Vec<(String, String)>,
    /// Answer success (with the existing table) instead of `TABLE_EXISTS`.
    pub success_if_exist: bool,
}

/// Lifecycle state of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TableStatus {
    #[default]
    Available = 0,
    /// Dropped, data held until `drop_expire_s`, recallable until then.
    Dropped = 1,
}

/// What meta knows about a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableInfo {
    pub app_id: i32,
    pub name: String,
    pub status: TableStatus,
    pub partition_count: i32,
    pub replica_count: i32,
    pub envs: Vec<(String, String)>,
    /// Unix seconds.
    pub create_time_s: u64,
    /// Unix seconds; 0 while available.
    pub drop_time_s: u64,
    /// Unix seconds after which a dropped table's data is deleted; 0 while
    /// available.
    pub drop_expire_s: u64,
}

/// One partition's configuration `(ballot, primary, secondaries)`; nodes
/// are named by their id (`host:port_base`), empty = none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionConfig {
    pub partition_index: i32,
    pub ballot: i64,
    pub primary: String,
    pub secondaries: Vec<String>,
    /// Replicas catching up before they join as secondaries.
    pub learners: Vec<String>,
}

/// describe_table's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDescription {
    pub info: TableInfo,
    /// Sorted by partition index, one per partition.
    pub partitions: Vec<PartitionConfig>,
}

/// A node as meta sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id: `host:port_base` (its shard 0 address).
    pub node: String,
    /// Every shard's listener address, by shard index.
    pub shard_addresses: Vec<String>,
    pub alive: bool,
    /// Partition replicas meta has placed on it.
    pub replica_count: i32,
    /// Milliseconds since its last beacon.
    pub last_beacon_ms_ago: u64,
    /// Primaries meta has placed on it.
    pub primary_count: i32,
    /// Replicas meta has placed on each of its shards, by shard index.
    pub shard_replica_counts: Vec<i32>,
    /// Primaries meta has placed on each of its shards, by shard index.
    pub shard_primary_counts: Vec<i32>,
    /// Being removed (`remove_node`): meta moves its replicas away and
    /// places nothing new on it.
    pub removing: bool,
}

/// A replica's role in its partition (PacificA). Wire-visible numbering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ReplicaRole {
    /// Serves reads and writes; the default (a node without replication
    /// hosts primaries only).
    #[default]
    Primary = 0,
    Secondary = 1,
    Learner = 2,
    Inactive = 3,
}

/// A replica a node hosts, as it reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostedReplica {
    pub gpid: Gpid,
    pub shard: i32,
    pub ballot: i64,
    /// The last decree the replica applied.
    pub decree_applied: i64,
    /// Its role (default `Primary`).
    pub role: ReplicaRole,
    /// The last decree the replica prepared (0 = none; nodes without
    /// replication report `decree_applied`).
    pub decree_prepared: i64,
    /// The last decree the replica committed (0 = none; nodes without
    /// replication report `decree_applied`).
    pub decree_committed: i64,
}

/// A node's beacon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeBeacon {
    /// The node's id: `host:port_base` (its shard 0 address).
    pub node: String,
    pub shard_addresses: Vec<String>,
    pub replicas: Vec<HostedReplica>,
    /// Differs after every restart of the node process (its start time in
    /// nanoseconds), so meta knows its replicas lost their volatile state.
    pub incarnation: u64,
    /// Its partition backups: running ones, and finished ones while meta
    /// still orders them.
    pub backups: Vec<BackupReport>,
    /// Its replicas of parent partitions of splitting tables.
    pub splits: Vec<SplitReport>,
    /// Its duplications, one per duplication and partition it is primary
    /// of.
    pub dups: Vec<DupReport>,
}

/// A replica meta wants a node to host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaAssignment {
    pub table: String,
    pub app_id: i32,
    pub partition_index: i32,
    pub partition_count: i32,
    /// The shard of the node that hosts it.
    pub shard: i32,
    pub ballot: i64,
    /// The partition's primary node id (`host:port_base`).
    pub primary: String,
    /// The partition's secondary node ids (empty without replication).
    pub secondaries: Vec<String>,
    /// The listener address of each member's shard that hosts the
    /// partition: primary, then secondaries, then learners.
    pub member_addresses: Vec<String>,
    /// The partition's learner node ids (catching up before they join).
    pub learners: Vec<String>,
    /// The table's replica count.
    pub replica_count: i32,
    /// The secondary node the primary should hand its role to (the
    /// balancer's primary switch); empty when none.
    pub handoff_to: String,
    /// The partition was made by a split: named primary or secondary, a
    /// node hosts it only from its copy of the parent, never empty.
    pub split_child: bool,
}

/// Meta's answer to a beacon: the node's full desired set of replicas, and
/// replicas whose data it must delete (their tables' hold time is over).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BeaconAck {
    pub assignments: Vec<ReplicaAssignment>,
    pub drops: Vec<Gpid>,
    /// How long from the beacon's send time the node may serve as primary,
    /// in milliseconds; 0 when meta's replication switch is off (nodes
    /// ignore it then).
    pub lease_ms: u64,
    /// A primary refuses writes while its partition has fewer members
    /// (0 = no bound).
    pub replica_count_min_alive: i32,
    /// Beacon again this many ms after this beacon's send time instead of
    /// the usual interval (0 = the usual interval). Meta asks it of both
    /// ends of a primary switch in progress (**switch-beacons-soon**).
    pub beacon_again_ms: u32,
    /// Partitions this node is to back up: those of running backups whose
    /// primary it is, not yet done.
    pub backups: Vec<BackupOrder>,
    /// Partitions of tables being restored that this node is to install.
    pub restores: Vec<RestoreOrder>,
    /// Parent partitions of splitting tables that this node hosts.
    pub splits: Vec<SplitOrder>,
    /// Partitions of duplicated tables this node is primary or secondary
    /// of.
    pub dups: Vec<DupOrder>,
    /// The cluster id of meta's cluster (1..=127; 0 = unknown, from an
    /// older meta): the node's timetags carry it.
    pub cluster_id: u8,
}

/// What a replica-to-replica message is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerKind {
    #[default]
    Prepare,
    PrepareAck,
    LearnRequest,
    LearnResponse,
    CheckpointChunk,
}

/// One mutation as replicas ship it (an encoded write batch, empty for the
/// empty write, under a ballot and decree).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMutation {
    pub ballot: u64,
    pub decree: u64,
    pub committed_decree: u64,
    pub payload: Vec<u8>,
}

/// A replica-to-replica message; the partition is the envelope's. Never
/// answered. Field meanings depend on `kind` (docs/wire.md, "Peer messages").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRequest {
    pub kind: PeerKind,
    /// The sender's node id (`host:port` of its shard 0).
    pub from: String,
    /// The listener address of the sender's shard hosting the partition.
    pub from_address: String,
    pub ballot: u64,
    pub decree: u64,
    pub committed_decree: u64,
    /// 0 = none; else a refusal code.
    pub error: u8,
    /// The refusal's value; for a copy chunk, the learner's commit point in
    /// the request the copy answers.
    pub error_value: u64,
    pub flag: bool,
    pub mutations: Vec<PeerMutation>,
    pub data: Vec<u8>,
    pub name: String,
}

impl Request {
    /// The hash key that routes this request, when it has exactly one.
    pub fn hash_key(&self) -> Option<&[u8]> {
        match self {
            Request::Get(key)
            | Request::Del(key)
            | Request::Exist(key)
            | Request::Ttl(key)
            | Request::Set { key, .. }
            | Request::Incr { key, .. } => Some(&key.hash_key),
            Request::MultiGet(request) => Some(&request.hash_key),
            Request::MultiSet { hash_key, .. }
            | Request::MultiDel { hash_key, .. }
            | Request::SortKeyCount { hash_key } => Some(hash_key),
            Request::CheckAndSet(request) => Some(&request.hash_key),
            Request::CheckAndMutate(request) => Some(&request.hash_key),
            Request::GetScanner(ScanRequest {
                range: ScanRange::Hash { hash_key, .. },
                ..
            }) => Some(hash_key),
            Request::BatchGet { .. }
            | Request::GetScanner(_)
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
            | Request::Dup(_)
            | Request::Duplicate(_) => None,
        }
    }

    /// Whether the request changes data.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Set { .. }
                | Request::Del(_)
                | Request::MultiSet { .. }
                | Request::MultiDel { .. }
                | Request::Incr { .. }
                | Request::CheckAndSet(_)
                | Request::CheckAndMutate(_)
                | Request::Duplicate(_)
        )
    }

    /// Whether the request is addressed to meta (DDL, cluster queries,
    /// beacons) rather than to a node's data plane.
    pub fn is_meta(&self) -> bool {
        matches!(
            self,
            Request::CreateTable(_)
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
                | Request::Dup(_)
        )
    }

    /// A short lower-case name for logs, metrics and the shell.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Get(_) => "get",
            Request::Set { .. } => "set",
            Request::Del(_) => "del",
            Request::Exist(_) => "exist",
            Request::Ttl(_) => "ttl",
            Request::MultiGet(_) => "multi_get",
            Request::MultiSet { .. } => "multi_set",
            Request::MultiDel { .. } => "multi_del",
            Request::SortKeyCount { .. } => "sortkey_count",
            Request::Incr { .. } => "incr",
            Request::CheckAndSet(_) => "check_and_set",
            Request::CheckAndMutate(_) => "check_and_mutate",
            Request::BatchGet { .. } => "batch_get",
            Request::GetScanner(_) => "get_scanner",
            Request::Scan { .. } => "scan",
            Request::ClearScanner { .. } => "clear_scanner",
            Request::QueryRoute { .. } => "query_route",
            Request::CreateTable(_) => "create_table",
            Request::DropTable { .. } => "drop_table",
            Request::RecallTable { .. } => "recall_table",
            Request::ListTables { .. } => "list_tables",
            Request::DescribeTable { .. } => "describe_table",
            Request::ListNodes => "list_nodes",
            Request::ClusterInfo => "cluster_info",
            Request::SetAppEnvs { .. } => "set_app_envs",
            Request::GetAppEnvs { .. } => "get_app_envs",
            Request::Beacon(_) => "beacon",
            Request::RemoveSecondary { .. } => "remove_secondary",
            Request::UpgradeLearner { .. } => "upgrade_learner",
            Request::SwitchPrimary { .. } => "switch_primary",
            Request::Balancer(_) => "balancer",
            Request::Backup(_) => "backup",
            Request::PartitionSplit(_) => "partition_split",
            Request::Peer(_) => "peer",
            Request::Dup(_) => "dup",
            Request::Duplicate(_) => "duplicate",
        }
    }
}

/// Result of check_and_set and check_and_mutate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckAndSetResult {
    /// The check passed and the set / mutations were applied.
    pub set_succeeded: bool,
    /// `check_value_exist` and `check_value` are filled (the request asked
    /// for `return_check_value`).
    pub check_value_returned: bool,
    pub check_value_exist: bool,
    pub check_value: Vec<u8>,
}

/// One partition's location in a route table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRoute {
    pub partition_index: i32,
    /// `host:port` of the shard that serves it.
    pub address: String,
    pub ballot: i64,
}

/// A table's route: where each partition is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub table: String,
    pub app_id: i32,
    pub partition_count: i32,
    /// Sorted by partition index, one entry per partition.
    pub partitions: Vec<PartitionRoute>,
}

/// A successful response body. Which variant answers which request:
/// get → `Value`; set, del, multi_set → `Done`; exist → `Exist`;
/// ttl → `Ttl`; multi_get → `MultiGet`; multi_del → `Count` (records
/// deleted); sortkey_count → `Count`; incr → `Incr`; check_and_set and
/// check_and_mutate → `CheckAndSet`; batch_get → `BatchGet`; get_scanner and
/// scan → `Scan`; clear_scanner → `Done`; query_route → `Route`.
/// Meta: create_table → `Table` (the created or existing table); drop_table,
/// set_app_envs → `Done`; recall_table → `Table`; list_tables → `Tables`;
/// describe_table → `Description`; list_nodes → `Nodes`; cluster_info and
/// get_app_envs → `Pairs`; beacon → `BeaconAck`; remove_secondary → `Done`;
/// dup → `Pairs`. Nodes: duplicate → `Count`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    Done,
    Value(Vec<u8>),
    Exist(bool),
    /// Seconds left; -1 = the record has no TTL.
    Ttl(i32),
    MultiGet {
        /// Ascending by sort key.
        kvs: Vec<SortKeyValue>,
        /// A count, byte or server bound cut the result short.
        incomplete: bool,
    },
    Count(i64),
    Incr(i64),
    CheckAndSet(CheckAndSetResult),
    /// The records that exist, in request order.
    BatchGet(Vec<Record>),
    Scan {
        records: Vec<Record>,
        /// With `only_return_count`: how many records this batch matched.
        count: i64,
        /// The cursor to continue with, or `SCAN_CONTEXT_COMPLETE`.
        context_id: i64,
    },
    Route(Route),
    Table(TableInfo),
    Tables(Vec<TableInfo>),
    Description(TableDescription),
    Nodes(Vec<NodeInfo>),
    /// Ordered key-value pairs (cluster_info, get_app_envs).
    Pairs(Vec<(String, String)>),
    BeaconAck(BeaconAck),
}

/// A response: `Ok(body)` or the error that stopped the request.
pub type Response = Result<ResponseBody, OpError>;
