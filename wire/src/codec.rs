//! Codec: [`Request`] / [`Response`] values to framed flatbuffers and back.
//!
//! Encoding goes through a reusable [`Encoder`]; decoding always verifies the
//! buffer first (`flatbuffers::root_with_opts`, never the unchecked root) and
//! then validates every enum value, so any input either decodes to a
//! well-formed message or returns a [`DecodeError`] — it never panics.
//!
//! Absent byte vectors decode as empty ones and an absent filter table as
//! `Filter::none()`; the encoder writes every byte vector, so round trips are
//! exact. Semantic checks (for example "check_and_mutate needs at least one
//! mutation") belong to the server, which answers them with
//! `InvalidArgument`; the codec only rejects what cannot be represented.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, VerifierOptions, WIPOffset};

use crate::fb;
use crate::frame::{write_frame, FrameError, MessageKind, FRAME_BODY_BYTES_MAX};
use crate::message::{
    BackupJobState, BackupOrder, BackupPolicyChange, BackupPolicySpec, BackupReport, BackupRequest,
    BalancerRequest, BeaconAck, CheckAndMutateRequest, CheckAndSetRequest, CheckAndSetResult,
    CheckType, CreateTableRequest, DupMutation, DupOrder, DupReport, DupRequest, DupStatus,
    DuplicateRequest, Envelope, ErrorCode, Filter, FilterType, Gpid, HostedReplica, Key,
    MultiGetRequest, Mutation, NodeBeacon, NodeInfo, OpError, PartitionConfig, PartitionRoute,
    PeerKind, PeerMutation, PeerRequest, ProposedMove, Record, ReplicaAssignment, ReplicaRole,
    Request, Response, ResponseBody, RestoreOrder, Route, ScanRange, ScanRequest, SortKeyValue,
    SplitOrder, SplitReport, SplitRequest, TableDescription, TableInfo, TableStatus,
};

/// Once a message needed a builder larger than this, the encoder drops that
/// builder and starts again small, so one huge message does not pin its
/// memory for the life of the connection (1 MiB).
pub const ENCODER_BUILDER_BYTES_RETAIN_MAX: usize = 1024 * 1024;

/// Initial capacity of an encoder's builder (4 KiB): enough for point
/// requests and responses without growing.
pub const ENCODER_BUILDER_BYTES_INITIAL: usize = 4 * 1024;

/// Upper bound on the flatbuffers bytes one list item (a key, a record, a
/// mutation, ...) adds beyond its own byte strings: table, vtable offset,
/// vector lengths, alignment padding and the offset in its list.
const ENCODED_ITEM_OVERHEAD_BYTES_MAX: usize = 64;

/// Extra bytes charged to a list item with many scalar fields (table info,
/// node info, partition configuration, hosted replica, replica assignment,
/// backup report, backup order):
/// its larger vtable and up to 48 bytes of scalars and padding.
const ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX: usize = 64;

/// Upper bound on the flatbuffers bytes of an envelope and a body table
/// beyond their byte strings and list items.
const ENCODED_MESSAGE_OVERHEAD_BYTES_MAX: usize = 512;

/// Deepest table nesting a valid message has (envelope → body → table info
/// → env pair) is 4; this leaves room for appended fields.
const VERIFY_DEPTH_MAX: usize = 16;

/// A legitimate buffer's "apparent size" (bytes visited by the verifier,
/// shared vtables counted per table) stays below twice its real size; four
/// times bounds the work and decode amplification of crafted DAG buffers.
const VERIFY_APPARENT_BYTES_PER_BODY_BYTE_MAX: usize = 4;

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body would exceed [`FRAME_BODY_BYTES_MAX`]. `body_bytes`
    /// is the encoded size, or an upper estimate when encoding was skipped.
    #[error("message of {body_bytes} bytes exceeds the frame bound of {body_bytes_max} bytes")]
    TooLarge {
        body_bytes: usize,
        body_bytes_max: usize,
    },
    /// Framing refused the body for another reason (not expected: framing
    /// only bounds the size, which is checked above).
    #[error("framing failed: {0}")]
    Frame(FrameError),
}

/// Why a received body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer is not a valid flatbuffer of the expected root table.
    #[error("flatbuffer verification failed: {0}")]
    Verify(#[from] flatbuffers::InvalidFlatbuffer),
    /// The flatbuffer is valid but does not hold a valid message (missing
    /// body, unknown enum value, ...).
    #[error("invalid message: {0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(message.into())
}

/// Encodes requests and responses into whole frames, reusing one
/// flatbuffers builder (reset per message, replaced after a message larger
/// than [`ENCODER_BUILDER_BYTES_RETAIN_MAX`]). One per connection or task;
/// not shared between threads.
///
/// ```
/// use markab_wire::codec::{decode_request, Encoder};
/// use markab_wire::frame::{FrameDecoder, FRAME_BODY_BYTES_MAX};
/// use markab_wire::{Envelope, Key, Request};
///
/// let mut encoder = Encoder::new();
/// let mut out = Vec::new();
/// let envelope = Envelope { request_id: 7, ..Envelope::default() };
/// encoder.request_frame(&envelope, &Request::Get(Key::new("h", "s")), &mut out).unwrap();
///
/// let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
/// decoder.extend(&out);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// let (decoded_envelope, request) = decode_request(&frame.body).unwrap();
/// assert_eq!(decoded_envelope.request_id, 7);
/// assert_eq!(request, Request::Get(Key::new("h", "s")));
/// ```
pub struct Encoder {
    builder: FlatBufferBuilder<'static>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder whose builder starts at [`ENCODER_BUILDER_BYTES_INITIAL`].
    pub fn new() -> Encoder {
        Encoder {
            builder: FlatBufferBuilder::with_capacity(ENCODER_BUILDER_BYTES_INITIAL),
        }
    }

    /// Appends one request frame (header and `RequestEnvelope` body) to
    /// `out`. On error `out` is unchanged.
    pub fn request_frame(
        &mut self,
        envelope: &Envelope,
        request: &Request,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        check_estimate(request_bytes_estimate(request))?;
        self.builder.reset();
        let builder = &mut self.builder;
        let (body_type, body) = build_request(builder, request);
        let root = fb::RequestEnvelope::create(
            builder,
            &fb::RequestEnvelopeArgs {
                request_id: envelope.request_id,
                timeout_ms: envelope.timeout_ms,
                app_id: envelope.gpid.app_id,
                partition_index: envelope.gpid.partition_index,
                partition_hash: envelope.partition_hash,
                partition_count: envelope.partition_count,
                body_type,
                body: Some(body),
            },
        );
        builder.finish(root, None);
        self.finish_frame(MessageKind::Request, out)
    }

    /// Appends one response frame to `out`: `Err(OpError)` travels as its
    /// code and message with no body, `Ok(body)` as `ErrorCode::Ok` and the
    /// body. On error `out` is unchanged.
    pub fn response_frame(
        &mut self,
        request_id: u64,
        response: &Response,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        check_estimate(response_bytes_estimate(response))?;
        self.builder.reset();
        let builder = &mut self.builder;
        let root = match response {
            Ok(body) => {
                let (body_type, body) = build_response_body(builder, body);
                fb::ResponseEnvelope::create(
                    builder,
                    &fb::ResponseEnvelopeArgs {
                        request_id,
                        error: fb::ErrorCode::Ok,
                        message: None,
                        body_type,
                        body: Some(body),
                    },
                )
            }
            Err(error) => {
                let message = builder.create_string(&error.message);
                fb::ResponseEnvelope::create(
                    builder,
                    &fb::ResponseEnvelopeArgs {
                        request_id,
                        error: fb::ErrorCode(error.code as i16),
                        message: Some(message),
                        body_type: fb::ResponseBody::NONE,
                        body: None,
                    },
                )
            }
        };
        builder.finish(root, None);
        self.finish_frame(MessageKind::Response, out)
    }

    fn finish_frame(&mut self, kind: MessageKind, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let body = self.builder.finished_data();
        let body_bytes = body.len();
        let result = write_frame(kind, body, out).map_err(|error| match error {
            FrameError::TooLarge {
                body_bytes,
                body_bytes_max,
            } => EncodeError::TooLarge {
                body_bytes,
                body_bytes_max,
            },
            other => EncodeError::Frame(other),
        });
        if body_bytes > ENCODER_BUILDER_BYTES_RETAIN_MAX {
            self.builder = FlatBufferBuilder::with_capacity(ENCODER_BUILDER_BYTES_INITIAL);
        }
        result
    }
}

fn check_estimate(body_bytes: usize) -> Result<(), EncodeError> {
    if body_bytes > FRAME_BODY_BYTES_MAX {
        return Err(EncodeError::TooLarge {
            body_bytes,
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Size estimates: an upper bound on the encoded size, so a message that can
// never fit in a frame is refused before the builder grows toward it (the
// builder itself panics beyond 2 GiB).

fn items_estimate<T>(items: &[T], bytes_of: impl Fn(&T) -> usize) -> usize {
    items.iter().fold(0usize, |total, item| {
        total
            .saturating_add(bytes_of(item))
            .saturating_add(ENCODED_ITEM_OVERHEAD_BYTES_MAX)
    })
}

fn key_bytes(key: &Key) -> usize {
    key.hash_key.len().saturating_add(key.sort_key.len())
}

fn request_bytes_estimate(request: &Request) -> usize {
    let payload = match request {
        Request::Get(key) | Request::Del(key) | Request::Exist(key) | Request::Ttl(key) => {
            key_bytes(key)
        }
        Request::Set { key, value, .. } => key_bytes(key).saturating_add(value.len()),
        Request::MultiGet(request) => request
            .hash_key
            .len()
            .saturating_add(items_estimate(&request.sort_keys, Vec::len))
            .saturating_add(request.start_sort_key.len())
            .saturating_add(request.stop_sort_key.len())
            .saturating_add(request.sort_key_filter.pattern.len()),
        Request::MultiSet { hash_key, kvs, .. } => {
            hash_key.len().saturating_add(items_estimate(kvs, |kv| {
                kv.sort_key.len().saturating_add(kv.value.len())
            }))
        }
        Request::MultiDel {
            hash_key,
            sort_keys,
        } => hash_key
            .len()
            .saturating_add(items_estimate(sort_keys, Vec::len)),
        Request::SortKeyCount { hash_key } => hash_key.len(),
        Request::Incr { key, .. } => key_bytes(key),
        Request::CheckAndSet(request) => request
            .hash_key
            .len()
            .saturating_add(request.check_sort_key.len())
            .saturating_add(request.check_operand.len())
            .saturating_add(request.set_sort_key.len())
            .saturating_add(request.set_value.len()),
        Request::CheckAndMutate(request) => request
            .hash_key
            .len()
            .saturating_add(request.check_sort_key.len())
            .saturating_add(request.check_operand.len())
            .saturating_add(items_estimate(
                &request.mutations,
                |mutation| match mutation {
                    Mutation::Put {
                        sort_key, value, ..
                    } => sort_key.len().saturating_add(value.len()),
                    Mutation::Delete { sort_key } => sort_key.len(),
                },
            )),
        Request::BatchGet { keys } => items_estimate(keys, key_bytes),
        Request::GetScanner(request) => {
            let range = match &request.range {
                ScanRange::Hash {
                    hash_key,
                    start_sort_key,
                    stop_sort_key,
                } => hash_key
                    .len()
                    .saturating_add(start_sort_key.len())
                    .saturating_add(stop_sort_key.len()),
                ScanRange::Full => 0,
            };
            range
                .saturating_add(request.hash_key_filter.pattern.len())
                .saturating_add(request.sort_key_filter.pattern.len())
        }
        Request::Scan { .. } | Request::ClearScanner { .. } => 0,
        Request::QueryRoute { table }
        | Request::DescribeTable { table }
        | Request::GetAppEnvs { table }
        | Request::DropTable { table, .. } => table.len(),
        Request::CreateTable(request) => request
            .table
            .len()
            .saturating_add(pairs_bytes(&request.envs)),
        Request::RecallTable { new_name, .. } => new_name.len(),
        Request::ListTables { .. } | Request::ListNodes | Request::ClusterInfo => 0,
        Request::SetAppEnvs { table, envs } => table.len().saturating_add(pairs_bytes(envs)),
        Request::Beacon(beacon) => beacon
            .node
            .len()
            .saturating_add(strings_bytes(&beacon.shard_addresses))
            .saturating_add(items_estimate(&beacon.replicas, |_| {
                ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX
            }))
            .saturating_add(items_estimate(&beacon.backups, |report| {
                report
                    .prefix
                    .len()
                    .saturating_add(report.message.len())
                    .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
            }))
            .saturating_add(items_estimate(&beacon.splits, |report| {
                report
                    .message
                    .len()
                    .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
            }))
            .saturating_add(items_estimate(&beacon.dups, |report| {
                report
                    .message
                    .len()
                    .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
            })),
        Request::PartitionSplit(request) => request.table().len(),
        Request::Dup(request) => match request {
            DupRequest::Add {
                table,
                remote_metas,
                remote_table,
            } => table
                .len()
                .saturating_add(strings_bytes(remote_metas))
                .saturating_add(remote_table.len()),
            DupRequest::List { table } => table.len(),
            DupRequest::Pause { .. } | DupRequest::Start { .. } | DupRequest::Remove { .. } => 0,
        },
        Request::Duplicate(request) => {
            items_estimate(&request.mutations, |mutation| mutation.payload.len())
        }
        Request::RemoveSecondary { node, .. }
        | Request::UpgradeLearner { node, .. }
        | Request::SwitchPrimary { node, .. } => node.len(),
        Request::Balancer(request) => match request {
            BalancerRequest::GetLevel
            | BalancerRequest::Balance { .. }
            | BalancerRequest::ListMoves => 0,
            BalancerRequest::SetLevel { level } => level.len(),
            BalancerRequest::Propose(ProposedMove::MovePrimary { to, .. }) => to.len(),
            BalancerRequest::Propose(ProposedMove::CopyReplica { from, to, .. }) => {
                from.len().saturating_add(to.len())
            }
            BalancerRequest::Propose(ProposedMove::RemoveReplica { node, .. })
            | BalancerRequest::RemoveNode { node, .. } => node.len(),
        },
        Request::Backup(request) => match request {
            BackupRequest::Start { table, url } => table.len().saturating_add(url.len()),
            BackupRequest::List { table }
            | BackupRequest::QueryRestore { table }
            | BackupRequest::CancelRestore { table } => table.len(),
            BackupRequest::Query { .. } | BackupRequest::ListPolicies => 0,
            BackupRequest::QueryPolicy { name }
            | BackupRequest::EnablePolicy { name }
            | BackupRequest::DisablePolicy { name } => name.len(),
            BackupRequest::AddPolicy(spec) => spec
                .name
                .len()
                .saturating_add(strings_bytes(&spec.tables))
                .saturating_add(spec.url.len())
                .saturating_add(spec.start_time.len()),
            BackupRequest::ModifyPolicy(change) => change
                .name
                .len()
                .saturating_add(strings_bytes(&change.add_tables))
                .saturating_add(strings_bytes(&change.remove_tables))
                .saturating_add(change.start_time.len()),
            BackupRequest::Restore {
                url,
                table,
                new_table,
                ..
            } => url
                .len()
                .saturating_add(table.len())
                .saturating_add(new_table.len()),
        },
        Request::Peer(peer) => peer
            .from
            .len()
            .saturating_add(peer.from_address.len())
            .saturating_add(peer.name.len())
            .saturating_add(peer.data.len())
            .saturating_add(items_estimate(&peer.mutations, |mutation| {
                mutation
                    .payload
                    .len()
                    .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
            })),
    };
    payload.saturating_add(ENCODED_MESSAGE_OVERHEAD_BYTES_MAX)
}

fn pairs_bytes(pairs: &[(String, String)]) -> usize {
    items_estimate(pairs, |(key, value)| key.len().saturating_add(value.len()))
}

fn strings_bytes(strings: &[String]) -> usize {
    items_estimate(strings, String::len)
}

/// A list of 32-bit integers: its elements, plus one item's overhead for
/// its offset, length and padding.
fn ints_bytes(values: &[i32]) -> usize {
    std::mem::size_of_val(values).saturating_add(ENCODED_ITEM_OVERHEAD_BYTES_MAX)
}

fn table_info_bytes(info: &TableInfo) -> usize {
    info.name
        .len()
        .saturating_add(pairs_bytes(&info.envs))
        .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
}

fn record_bytes(record: &Record) -> usize {
    record
        .hash_key
        .len()
        .saturating_add(record.sort_key.len())
        .saturating_add(record.value.len())
}

fn response_bytes_estimate(response: &Response) -> usize {
    let payload = match response {
        Err(error) => error.message.len(),
        Ok(ResponseBody::Done)
        | Ok(ResponseBody::Exist(_))
        | Ok(ResponseBody::Ttl(_))
        | Ok(ResponseBody::Count(_))
        | Ok(ResponseBody::Incr(_)) => 0,
        Ok(ResponseBody::Value(value)) => value.len(),
        Ok(ResponseBody::MultiGet { kvs, .. }) => {
            items_estimate(kvs, |kv| kv.sort_key.len().saturating_add(kv.value.len()))
        }
        Ok(ResponseBody::CheckAndSet(result)) => result.check_value.len(),
        Ok(ResponseBody::BatchGet(records)) => items_estimate(records, record_bytes),
        Ok(ResponseBody::Scan { records, .. }) => items_estimate(records, record_bytes),
        Ok(ResponseBody::Route(route)) => route
            .table
            .len()
            .saturating_add(items_estimate(&route.partitions, |partition| {
                partition.address.len()
            })),
        Ok(ResponseBody::Table(info)) => table_info_bytes(info),
        Ok(ResponseBody::Tables(tables)) => items_estimate(tables, table_info_bytes),
        Ok(ResponseBody::Description(description)) => table_info_bytes(&description.info)
            .saturating_add(items_estimate(&description.partitions, |partition| {
                partition
                    .primary
                    .len()
                    .saturating_add(strings_bytes(&partition.secondaries))
                    .saturating_add(strings_bytes(&partition.learners))
                    .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
            })),
        Ok(ResponseBody::Nodes(nodes)) => items_estimate(nodes, |node| {
            node.node
                .len()
                .saturating_add(strings_bytes(&node.shard_addresses))
                .saturating_add(ints_bytes(&node.shard_replica_counts))
                .saturating_add(ints_bytes(&node.shard_primary_counts))
                .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
        }),
        Ok(ResponseBody::Pairs(pairs)) => pairs_bytes(pairs),
        Ok(ResponseBody::BeaconAck(ack)) => items_estimate(&ack.assignments, |assignment| {
            assignment
                .table
                .len()
                .saturating_add(assignment.primary.len())
                .saturating_add(strings_bytes(&assignment.secondaries))
                .saturating_add(strings_bytes(&assignment.member_addresses))
                .saturating_add(strings_bytes(&assignment.learners))
                .saturating_add(assignment.handoff_to.len())
                .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
        })
        .saturating_add(items_estimate(&ack.drops, |_| 0))
        .saturating_add(items_estimate(&ack.backups, |order| {
            order
                .url
                .len()
                .saturating_add(order.prefix.len())
                .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
        }))
        .saturating_add(items_estimate(&ack.restores, |order| {
            order
                .url
                .len()
                .saturating_add(order.prefix.len())
                .saturating_add(order.table.len())
                .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
        }))
        .saturating_add(items_estimate(&ack.splits, |_| {
            ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX
        }))
        .saturating_add(items_estimate(&ack.dups, |order| {
            strings_bytes(&order.remote_metas)
                .saturating_add(order.remote_table.len())
                .saturating_add(ENCODED_WIDE_ITEM_EXTRA_BYTES_MAX)
        })),
    };
    payload.saturating_add(ENCODED_MESSAGE_OVERHEAD_BYTES_MAX)
}

// ---------------------------------------------------------------------------
// Building.

type Builder = FlatBufferBuilder<'static>;
type Bytes = WIPOffset<Vector<'static, u8>>;

fn bytes(builder: &mut Builder, data: &[u8]) -> Bytes {
    builder.create_vector(data)
}

fn byte_list(
    builder: &mut Builder,
    items: &[Vec<u8>],
) -> WIPOffset<Vector<'static, ForwardsUOffset<fb::Bytes<'static>>>> {
    let offsets: Vec<_> = items
        .iter()
        .map(|item| {
            let data = bytes(builder, item);
            fb::Bytes::create(builder, &fb::BytesArgs { data: Some(data) })
        })
        .collect();
    builder.create_vector(&offsets)
}

/// `None` for `Filter::none()` (the decoder's default for an absent table).
fn filter(builder: &mut Builder, filter: &Filter) -> Option<WIPOffset<fb::Filter<'static>>> {
    if filter.kind == FilterType::NoFilter && filter.pattern.is_empty() {
        return None;
    }
    let pattern = bytes(builder, &filter.pattern);
    Some(fb::Filter::create(
        builder,
        &fb::FilterArgs {
            kind: fb::FilterType(filter.kind as u8),
            pattern: Some(pattern),
        },
    ))
}

fn sort_key_values(
    builder: &mut Builder,
    kvs: &[SortKeyValue],
) -> WIPOffset<Vector<'static, ForwardsUOffset<fb::SortKeyValue<'static>>>> {
    let offsets: Vec<_> = kvs
        .iter()
        .map(|kv| {
            let sort_key = bytes(builder, &kv.sort_key);
            let value = bytes(builder, &kv.value);
            fb::SortKeyValue::create(
                builder,
                &fb::SortKeyValueArgs {
                    sort_key: Some(sort_key),
                    value: Some(value),
                },
            )
        })
        .collect();
    builder.create_vector(&offsets)
}

fn records(
    builder: &mut Builder,
    records: &[Record],
) -> WIPOffset<Vector<'static, ForwardsUOffset<fb::Record<'static>>>> {
    let offsets: Vec<_> = records
        .iter()
        .map(|record| {
            let hash_key = bytes(builder, &record.hash_key);
            let sort_key = bytes(builder, &record.sort_key);
            let value = bytes(builder, &record.value);
            fb::Record::create(
                builder,
                &fb::RecordArgs {
                    hash_key: Some(hash_key),
                    sort_key: Some(sort_key),
                    value: Some(value),
                },
            )
        })
        .collect();
    builder.create_vector(&offsets)
}

type StringList = WIPOffset<Vector<'static, ForwardsUOffset<&'static str>>>;

fn string_list(builder: &mut Builder, strings: &[String]) -> StringList {
    let offsets: Vec<_> = strings
        .iter()
        .map(|string| builder.create_string(string))
        .collect();
    builder.create_vector(&offsets)
}

fn string_pairs(
    builder: &mut Builder,
    pairs: &[(String, String)],
) -> WIPOffset<Vector<'static, ForwardsUOffset<fb::StringPair<'static>>>> {
    let offsets: Vec<_> = pairs
        .iter()
        .map(|(key, value)| {
            let key = Some(builder.create_string(key));
            let value = Some(builder.create_string(value));
            fb::StringPair::create(builder, &fb::StringPairArgs { key, value })
        })
        .collect();
    builder.create_vector(&offsets)
}

fn table_info(builder: &mut Builder, info: &TableInfo) -> WIPOffset<fb::TableInfo<'static>> {
    let name = Some(builder.create_string(&info.name));
    let envs = Some(string_pairs(builder, &info.envs));
    fb::TableInfo::create(
        builder,
        &fb::TableInfoArgs {
            app_id: info.app_id,
            name,
            status: fb::TableStatus(info.status as u8),
            partition_count: info.partition_count,
            replica_count: info.replica_count,
            envs,
            create_time_s: info.create_time_s,
            drop_time_s: info.drop_time_s,
            drop_expire_s: info.drop_expire_s,
        },
    )
}

fn partition_config(
    builder: &mut Builder,
    partition: &PartitionConfig,
) -> WIPOffset<fb::PartitionConfig<'static>> {
    let primary = Some(builder.create_string(&partition.primary));
    let secondaries = Some(string_list(builder, &partition.secondaries));
    let learners = Some(string_list(builder, &partition.learners));
    fb::PartitionConfig::create(
        builder,
        &fb::PartitionConfigArgs {
            partition_index: partition.partition_index,
            ballot: partition.ballot,
            primary,
            secondaries,
            learners,
        },
    )
}

fn node_info(builder: &mut Builder, node: &NodeInfo) -> WIPOffset<fb::NodeInfo<'static>> {
    let name = Some(builder.create_string(&node.node));
    let shard_addresses = Some(string_list(builder, &node.shard_addresses));
    let shard_replica_counts = Some(builder.create_vector(&node.shard_replica_counts));
    let shard_primary_counts = Some(builder.create_vector(&node.shard_primary_counts));
    fb::NodeInfo::create(
        builder,
        &fb::NodeInfoArgs {
            node: name,
            shard_addresses,
            alive: node.alive,
            replica_count: node.replica_count,
            last_beacon_ms_ago: node.last_beacon_ms_ago,
            primary_count: node.primary_count,
            shard_replica_counts,
            shard_primary_counts,
            removing: node.removing,
        },
    )
}

fn hosted_replica(
    builder: &mut Builder,
    replica: &HostedReplica,
) -> WIPOffset<fb::HostedReplica<'static>> {
    let gpid = fb_gpid(replica.gpid);
    fb::HostedReplica::create(
        builder,
        &fb::HostedReplicaArgs {
            gpid: Some(&gpid),
            shard: replica.shard,
            ballot: replica.ballot,
            decree_applied: replica.decree_applied,
            role: fb::ReplicaRole(replica.role as u8),
            decree_prepared: replica.decree_prepared,
            decree_committed: replica.decree_committed,
        },
    )
}

fn backup_report(
    builder: &mut Builder,
    report: &BackupReport,
) -> WIPOffset<fb::BackupReport<'static>> {
    let gpid = fb_gpid(report.gpid);
    let prefix = Some(builder.create_string(&report.prefix));
    let message = Some(builder.create_string(&report.message));
    let state = match report.state {
        BackupJobState::Running => fb::BackupJobState::Running,
        BackupJobState::Done => fb::BackupJobState::Done,
        BackupJobState::Failed => fb::BackupJobState::Failed,
    };
    fb::BackupReport::create(
        builder,
        &fb::BackupReportArgs {
            backup_id: report.backup_id,
            gpid: Some(&gpid),
            ballot: report.ballot,
            state,
            decree: report.decree,
            bytes_done: report.bytes_done,
            bytes_total: report.bytes_total,
            prefix,
            message,
            restore: report.restore,
        },
    )
}

fn decode_backup_report(report: fb::BackupReport<'_>) -> Result<BackupReport, DecodeError> {
    let gpid = report
        .gpid()
        .ok_or_else(|| invalid("beacon backup report carries no gpid"))?;
    let state = match report.state() {
        fb::BackupJobState::Running => BackupJobState::Running,
        fb::BackupJobState::Done => BackupJobState::Done,
        fb::BackupJobState::Failed => BackupJobState::Failed,
        other => return Err(invalid(format!("unknown backup job state {}", other.0))),
    };
    Ok(BackupReport {
        backup_id: report.backup_id(),
        gpid: decode_gpid(gpid),
        ballot: report.ballot(),
        state,
        decree: report.decree(),
        bytes_done: report.bytes_done(),
        bytes_total: report.bytes_total(),
        prefix: owned_string(report.prefix()),
        message: owned_string(report.message()),
        restore: report.restore(),
    })
}

fn split_report(
    builder: &mut Builder,
    report: &SplitReport,
) -> WIPOffset<fb::SplitReport<'static>> {
    let gpid = fb_gpid(report.gpid);
    let message = Some(builder.create_string(&report.message));
    fb::SplitReport::create(
        builder,
        &fb::SplitReportArgs {
            gpid: Some(&gpid),
            epoch: report.epoch,
            ballot: report.ballot,
            fence_decree: report.fence_decree,
            copied_decree: report.copied_decree,
            message,
            fenced: report.fenced,
            copied: report.copied,
        },
    )
}

fn decode_split_report(report: fb::SplitReport<'_>) -> Result<SplitReport, DecodeError> {
    let gpid = report
        .gpid()
        .ok_or_else(|| invalid("beacon split report carries no gpid"))?;
    Ok(SplitReport {
        gpid: decode_gpid(gpid),
        epoch: report.epoch(),
        ballot: report.ballot(),
        fence_decree: report.fence_decree(),
        copied_decree: report.copied_decree(),
        message: owned_string(report.message()),
        fenced: report.fenced(),
        copied: report.copied(),
    })
}

fn split_order(builder: &mut Builder, order: &SplitOrder) -> WIPOffset<fb::SplitOrder<'static>> {
    let gpid = fb_gpid(order.gpid);
    fb::SplitOrder::create(
        builder,
        &fb::SplitOrderArgs {
            gpid: Some(&gpid),
            new_count: order.new_count,
            epoch: order.epoch,
            fence_decree: order.fence_decree,
            fenced: order.fenced,
        },
    )
}

fn decode_split_order(order: fb::SplitOrder<'_>) -> Result<SplitOrder, DecodeError> {
    let gpid = order
        .gpid()
        .ok_or_else(|| invalid("beacon ack split order carries no gpid"))?;
    Ok(SplitOrder {
        gpid: decode_gpid(gpid),
        new_count: order.new_count(),
        epoch: order.epoch(),
        fence_decree: order.fence_decree(),
        fenced: order.fenced(),
    })
}

/// A split request as one `PartitionSplitRequest` table.
fn split_request(
    builder: &mut Builder,
    request: &SplitRequest,
) -> WIPOffset<fb::PartitionSplitRequest<'static>> {
    let table = Some(builder.create_string(request.table()));
    let (op, new_count) = match request {
        SplitRequest::Start { new_count, .. } => (fb::SplitOp::Start, *new_count),
        SplitRequest::Query { .. } => (fb::SplitOp::Query, 0),
        SplitRequest::Pause { .. } => (fb::SplitOp::Pause, 0),
        SplitRequest::Restart { .. } => (fb::SplitOp::Restart, 0),
        SplitRequest::Cancel { .. } => (fb::SplitOp::Cancel, 0),
    };
    fb::PartitionSplitRequest::create(
        builder,
        &fb::PartitionSplitRequestArgs {
            op,
            table,
            new_count,
        },
    )
}

fn decode_split_request(
    request: fb::PartitionSplitRequest<'_>,
) -> Result<SplitRequest, DecodeError> {
    let table = owned_string(request.table());
    Ok(match request.op() {
        fb::SplitOp::Start => SplitRequest::Start {
            table,
            new_count: request.new_count(),
        },
        fb::SplitOp::Query => SplitRequest::Query { table },
        fb::SplitOp::Pause => SplitRequest::Pause { table },
        fb::SplitOp::Restart => SplitRequest::Restart { table },
        fb::SplitOp::Cancel => SplitRequest::Cancel { table },
        other => return Err(invalid(format!("unknown split op {}", other.0))),
    })
}

fn dup_report(builder: &mut Builder, report: &DupReport) -> WIPOffset<fb::DupReport<'static>> {
    let gpid = fb_gpid(report.gpid);
    let message = Some(builder.create_string(&report.message));
    fb::DupReport::create(
        builder,
        &fb::DupReportArgs {
            dup_id: report.dup_id,
            gpid: Some(&gpid),
            confirmed_decree: report.confirmed_decree,
            committed_decree: report.committed_decree,
            lag_ms: report.lag_ms,
            shipped_records: report.shipped_records,
            shipped_bytes: report.shipped_bytes,
            errors: report.errors,
            failed: report.failed,
            message,
        },
    )
}

fn decode_dup_report(report: fb::DupReport<'_>) -> Result<DupReport, DecodeError> {
    let gpid = report
        .gpid()
        .ok_or_else(|| invalid("beacon dup report carries no gpid"))?;
    Ok(DupReport {
        dup_id: report.dup_id(),
        gpid: decode_gpid(gpid),
        confirmed_decree: report.confirmed_decree(),
        committed_decree: report.committed_decree(),
        lag_ms: report.lag_ms(),
        shipped_records: report.shipped_records(),
        shipped_bytes: report.shipped_bytes(),
        errors: report.errors(),
        failed: report.failed(),
        message: owned_string(report.message()),
    })
}

fn dup_order(builder: &mut Builder, order: &DupOrder) -> WIPOffset<fb::DupOrder<'static>> {
    let gpid = fb_gpid(order.gpid);
    let remote_metas = Some(string_list(builder, &order.remote_metas));
    let remote_table = Some(builder.create_string(&order.remote_table));
    let status = match order.status {
        DupStatus::Running => fb::DupStatus::Running,
        DupStatus::Paused => fb::DupStatus::Paused,
    };
    fb::DupOrder::create(
        builder,
        &fb::DupOrderArgs {
            dup_id: order.dup_id,
            gpid: Some(&gpid),
            remote_metas,
            remote_table,
            remote_cluster_id: order.remote_cluster_id,
            status,
            confirmed_decree: order.confirmed_decree,
        },
    )
}

fn decode_dup_order(order: fb::DupOrder<'_>) -> Result<DupOrder, DecodeError> {
    let gpid = order
        .gpid()
        .ok_or_else(|| invalid("beacon ack dup order carries no gpid"))?;
    let status = match order.status() {
        fb::DupStatus::Running => DupStatus::Running,
        fb::DupStatus::Paused => DupStatus::Paused,
        other => return Err(invalid(format!("unknown dup status {}", other.0))),
    };
    Ok(DupOrder {
        dup_id: order.dup_id(),
        gpid: decode_gpid(gpid),
        remote_metas: owned_strings(order.remote_metas()),
        remote_table: owned_string(order.remote_table()),
        remote_cluster_id: order.remote_cluster_id(),
        status,
        confirmed_decree: order.confirmed_decree(),
    })
}

/// A duplication request as one `DupRequest` table.
fn dup_request(builder: &mut Builder, request: &DupRequest) -> WIPOffset<fb::DupRequest<'static>> {
    let mut args = fb::DupRequestArgs::default();
    match request {
        DupRequest::Add {
            table,
            remote_metas,
            remote_table,
        } => {
            args.op = fb::DupOp::Add;
            args.table = Some(builder.create_string(table));
            args.remote_metas = Some(string_list(builder, remote_metas));
            args.remote_table = Some(builder.create_string(remote_table));
        }
        DupRequest::List { table } => {
            args.op = fb::DupOp::List;
            args.table = Some(builder.create_string(table));
        }
        DupRequest::Pause { id } => {
            args.op = fb::DupOp::Pause;
            args.dup_id = *id;
        }
        DupRequest::Start { id } => {
            args.op = fb::DupOp::Start;
            args.dup_id = *id;
        }
        DupRequest::Remove { id } => {
            args.op = fb::DupOp::Remove;
            args.dup_id = *id;
        }
    }
    fb::DupRequest::create(builder, &args)
}

fn decode_dup_request(request: fb::DupRequest<'_>) -> Result<DupRequest, DecodeError> {
    let id = request.dup_id();
    Ok(match request.op() {
        fb::DupOp::Add => DupRequest::Add {
            table: owned_string(request.table()),
            remote_metas: owned_strings(request.remote_metas()),
            remote_table: owned_string(request.remote_table()),
        },
        fb::DupOp::List => DupRequest::List {
            table: owned_string(request.table()),
        },
        fb::DupOp::Pause => DupRequest::Pause { id },
        fb::DupOp::Start => DupRequest::Start { id },
        fb::DupOp::Remove => DupRequest::Remove { id },
        other => return Err(invalid(format!("unknown dup op {}", other.0))),
    })
}

fn duplicate_request(
    builder: &mut Builder,
    request: &DuplicateRequest,
) -> WIPOffset<fb::DuplicateRequest<'static>> {
    let mutations: Vec<_> = request
        .mutations
        .iter()
        .map(|mutation| {
            let payload = Some(bytes(builder, &mutation.payload));
            fb::DupMutation::create(
                builder,
                &fb::DupMutationArgs {
                    decree: mutation.decree,
                    payload,
                },
            )
        })
        .collect();
    let mutations = Some(builder.create_vector(&mutations));
    fb::DuplicateRequest::create(
        builder,
        &fb::DuplicateRequestArgs {
            source_cluster_id: request.source_cluster_id,
            dup_id: request.dup_id,
            mutations,
        },
    )
}

fn decode_duplicate_request(request: fb::DuplicateRequest<'_>) -> DuplicateRequest {
    DuplicateRequest {
        source_cluster_id: request.source_cluster_id(),
        dup_id: request.dup_id(),
        mutations: request
            .mutations()
            .iter()
            .flat_map(|list| list.iter())
            .map(|mutation| DupMutation {
                decree: mutation.decree(),
                payload: owned(mutation.payload()),
            })
            .collect(),
    }
}

fn restore_order(
    builder: &mut Builder,
    order: &RestoreOrder,
) -> WIPOffset<fb::RestoreOrder<'static>> {
    let gpid = fb_gpid(order.gpid);
    let table = Some(builder.create_string(&order.table));
    let url = Some(builder.create_string(&order.url));
    let prefix = Some(builder.create_string(&order.prefix));
    fb::RestoreOrder::create(
        builder,
        &fb::RestoreOrderArgs {
            backup_id: order.backup_id,
            gpid: Some(&gpid),
            shard: order.shard,
            table,
            partition_count: order.partition_count,
            url,
            prefix,
            decree: order.decree,
        },
    )
}

fn decode_restore_order(order: fb::RestoreOrder<'_>) -> Result<RestoreOrder, DecodeError> {
    let gpid = order
        .gpid()
        .ok_or_else(|| invalid("beacon ack restore order carries no gpid"))?;
    Ok(RestoreOrder {
        backup_id: order.backup_id(),
        gpid: decode_gpid(gpid),
        shard: order.shard(),
        table: owned_string(order.table()),
        partition_count: order.partition_count(),
        url: owned_string(order.url()),
        prefix: owned_string(order.prefix()),
        decree: order.decree(),
    })
}

fn backup_order(builder: &mut Builder, order: &BackupOrder) -> WIPOffset<fb::BackupOrder<'static>> {
    let gpid = fb_gpid(order.gpid);
    let url = Some(builder.create_string(&order.url));
    let prefix = Some(builder.create_string(&order.prefix));
    fb::BackupOrder::create(
        builder,
        &fb::BackupOrderArgs {
            backup_id: order.backup_id,
            gpid: Some(&gpid),
            ballot: order.ballot,
            url,
            prefix,
        },
    )
}

fn decode_backup_order(order: fb::BackupOrder<'_>) -> Result<BackupOrder, DecodeError> {
    let gpid = order
        .gpid()
        .ok_or_else(|| invalid("beacon ack backup order carries no gpid"))?;
    Ok(BackupOrder {
        backup_id: order.backup_id(),
        gpid: decode_gpid(gpid),
        ballot: order.ballot(),
        url: owned_string(order.url()),
        prefix: owned_string(order.prefix()),
    })
}

fn replica_assignment(
    builder: &mut Builder,
    assignment: &ReplicaAssignment,
) -> WIPOffset<fb::ReplicaAssignment<'static>> {
    let table = Some(builder.create_string(&assignment.table));
    let primary = Some(builder.create_string(&assignment.primary));
    let secondaries = Some(string_list(builder, &assignment.secondaries));
    let member_addresses = Some(string_list(builder, &assignment.member_addresses));
    let learners = Some(string_list(builder, &assignment.learners));
    let handoff_to = Some(builder.create_string(&assignment.handoff_to));
    fb::ReplicaAssignment::create(
        builder,
        &fb::ReplicaAssignmentArgs {
            table,
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
            partition_count: assignment.partition_count,
            shard: assignment.shard,
            ballot: assignment.ballot,
            primary,
            secondaries,
            member_addresses,
            learners,
            replica_count: assignment.replica_count,
            handoff_to,
            split_child: assignment.split_child,
        },
    )
}

fn peer_request(builder: &mut Builder, peer: &PeerRequest) -> WIPOffset<fb::PeerRequest<'static>> {
    let from = Some(builder.create_string(&peer.from));
    let from_address = Some(builder.create_string(&peer.from_address));
    let name = Some(builder.create_string(&peer.name));
    let mutations: Vec<_> = peer
        .mutations
        .iter()
        .map(|mutation| {
            let payload = Some(builder.create_vector(&mutation.payload));
            fb::PeerMutation::create(
                builder,
                &fb::PeerMutationArgs {
                    ballot: mutation.ballot,
                    decree: mutation.decree,
                    committed_decree: mutation.committed_decree,
                    payload,
                },
            )
        })
        .collect();
    let mutations = Some(builder.create_vector(&mutations));
    let data = Some(builder.create_vector(&peer.data));
    let kind = match peer.kind {
        PeerKind::Prepare => fb::PeerKind::Prepare,
        PeerKind::PrepareAck => fb::PeerKind::PrepareAck,
        PeerKind::LearnRequest => fb::PeerKind::LearnRequest,
        PeerKind::LearnResponse => fb::PeerKind::LearnResponse,
        PeerKind::CheckpointChunk => fb::PeerKind::CheckpointChunk,
    };
    fb::PeerRequest::create(
        builder,
        &fb::PeerRequestArgs {
            kind,
            from,
            from_address,
            ballot: peer.ballot,
            decree: peer.decree,
            committed_decree: peer.committed_decree,
            error: peer.error,
            error_value: peer.error_value,
            flag: peer.flag,
            mutations,
            data,
            name,
        },
    )
}

fn decode_peer_request(table: fb::PeerRequest<'_>) -> Result<PeerRequest, DecodeError> {
    let kind = match table.kind() {
        fb::PeerKind::Prepare => PeerKind::Prepare,
        fb::PeerKind::PrepareAck => PeerKind::PrepareAck,
        fb::PeerKind::LearnRequest => PeerKind::LearnRequest,
        fb::PeerKind::LearnResponse => PeerKind::LearnResponse,
        fb::PeerKind::CheckpointChunk => PeerKind::CheckpointChunk,
        other => return Err(invalid(format!("unknown peer message kind {}", other.0))),
    };
    let mutations = table
        .mutations()
        .map(|list| {
            list.iter()
                .map(|mutation| PeerMutation {
                    ballot: mutation.ballot(),
                    decree: mutation.decree(),
                    committed_decree: mutation.committed_decree(),
                    payload: owned(mutation.payload()),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PeerRequest {
        kind,
        from: owned_string(table.from()),
        from_address: owned_string(table.from_address()),
        ballot: table.ballot(),
        decree: table.decree(),
        committed_decree: table.committed_decree(),
        error: table.error(),
        error_value: table.error_value(),
        flag: table.flag(),
        mutations,
        data: owned(table.data()),
        name: owned_string(table.name()),
    })
}

/// A balancer request as one `BalancerRequest` table: the fields `op` does
/// not use stay absent.
fn balancer_request(
    builder: &mut Builder,
    request: &BalancerRequest,
) -> WIPOffset<fb::BalancerRequest<'static>> {
    let gpid;
    let mut args = fb::BalancerRequestArgs::default();
    match request {
        BalancerRequest::GetLevel => args.op = fb::BalancerOp::GetLevel,
        BalancerRequest::SetLevel { level } => {
            args.op = fb::BalancerOp::SetLevel;
            args.level = Some(builder.create_string(level));
        }
        BalancerRequest::Balance { apply } => {
            args.op = fb::BalancerOp::Balance;
            args.flag = *apply;
        }
        BalancerRequest::Propose(ProposedMove::MovePrimary { gpid: id, to }) => {
            args.op = fb::BalancerOp::MovePrimary;
            gpid = fb_gpid(*id);
            args.gpid = Some(&gpid);
            args.to = Some(builder.create_string(to));
        }
        BalancerRequest::Propose(ProposedMove::CopyReplica { gpid: id, from, to }) => {
            args.op = fb::BalancerOp::CopyReplica;
            gpid = fb_gpid(*id);
            args.gpid = Some(&gpid);
            args.from = Some(builder.create_string(from));
            args.to = Some(builder.create_string(to));
        }
        BalancerRequest::Propose(ProposedMove::RemoveReplica { gpid: id, node }) => {
            args.op = fb::BalancerOp::RemoveReplica;
            gpid = fb_gpid(*id);
            args.gpid = Some(&gpid);
            args.from = Some(builder.create_string(node));
        }
        BalancerRequest::ListMoves => args.op = fb::BalancerOp::ListMoves,
        BalancerRequest::RemoveNode { node, cancel } => {
            args.op = fb::BalancerOp::RemoveNode;
            args.from = Some(builder.create_string(node));
            args.flag = *cancel;
        }
    }
    fb::BalancerRequest::create(builder, &args)
}

fn decode_balancer_request(table: fb::BalancerRequest<'_>) -> Result<BalancerRequest, DecodeError> {
    let gpid = || {
        table
            .gpid()
            .map(decode_gpid)
            .ok_or_else(|| invalid("balancer move carries no gpid"))
    };
    Ok(match table.op() {
        fb::BalancerOp::GetLevel => BalancerRequest::GetLevel,
        fb::BalancerOp::SetLevel => BalancerRequest::SetLevel {
            level: owned_string(table.level()),
        },
        fb::BalancerOp::Balance => BalancerRequest::Balance {
            apply: table.flag(),
        },
        fb::BalancerOp::MovePrimary => BalancerRequest::Propose(ProposedMove::MovePrimary {
            gpid: gpid()?,
            to: owned_string(table.to()),
        }),
        fb::BalancerOp::CopyReplica => BalancerRequest::Propose(ProposedMove::CopyReplica {
            gpid: gpid()?,
            from: owned_string(table.from()),
            to: owned_string(table.to()),
        }),
        fb::BalancerOp::RemoveReplica => BalancerRequest::Propose(ProposedMove::RemoveReplica {
            gpid: gpid()?,
            node: owned_string(table.from()),
        }),
        fb::BalancerOp::ListMoves => BalancerRequest::ListMoves,
        fb::BalancerOp::RemoveNode => BalancerRequest::RemoveNode {
            node: owned_string(table.from()),
            cancel: table.flag(),
        },
        other => return Err(invalid(format!("unknown balancer op {}", other.0))),
    })
}

/// A backup request as one `BackupRequest` table: the fields `op` does not
/// use stay absent.
fn backup_request(
    builder: &mut Builder,
    request: &BackupRequest,
) -> WIPOffset<fb::BackupRequest<'static>> {
    let mut args = fb::BackupRequestArgs::default();
    match request {
        BackupRequest::Start { table, url } => {
            args.op = fb::BackupOp::Start;
            args.table = Some(builder.create_string(table));
            args.url = Some(builder.create_string(url));
        }
        BackupRequest::List { table } => {
            args.op = fb::BackupOp::List;
            args.table = Some(builder.create_string(table));
        }
        BackupRequest::Query { backup_id } => {
            args.op = fb::BackupOp::Query;
            args.backup_id = *backup_id;
        }
        BackupRequest::Restore {
            url,
            backup_id,
            table,
            new_table,
        } => {
            args.op = fb::BackupOp::Restore;
            args.url = Some(builder.create_string(url));
            args.backup_id = *backup_id;
            args.table = Some(builder.create_string(table));
            args.new_table = Some(builder.create_string(new_table));
        }
        BackupRequest::QueryRestore { table } => {
            args.op = fb::BackupOp::QueryRestore;
            args.table = Some(builder.create_string(table));
        }
        BackupRequest::CancelRestore { table } => {
            args.op = fb::BackupOp::CancelRestore;
            args.table = Some(builder.create_string(table));
        }
        BackupRequest::AddPolicy(spec) => {
            args.op = fb::BackupOp::AddPolicy;
            args.policy = Some(builder.create_string(&spec.name));
            args.tables = Some(string_list(builder, &spec.tables));
            args.url = Some(builder.create_string(&spec.url));
            args.interval_seconds = spec.interval_seconds;
            args.start_time = Some(builder.create_string(&spec.start_time));
            args.keep = spec.keep;
        }
        BackupRequest::ListPolicies => args.op = fb::BackupOp::ListPolicies,
        BackupRequest::QueryPolicy { name } => {
            args.op = fb::BackupOp::QueryPolicy;
            args.policy = Some(builder.create_string(name));
        }
        BackupRequest::ModifyPolicy(change) => {
            args.op = fb::BackupOp::ModifyPolicy;
            args.policy = Some(builder.create_string(&change.name));
            args.tables = Some(string_list(builder, &change.add_tables));
            args.remove_tables = Some(string_list(builder, &change.remove_tables));
            args.interval_seconds = change.interval_seconds;
            args.start_time = Some(builder.create_string(&change.start_time));
            args.keep = change.keep;
        }
        BackupRequest::EnablePolicy { name } => {
            args.op = fb::BackupOp::EnablePolicy;
            args.policy = Some(builder.create_string(name));
        }
        BackupRequest::DisablePolicy { name } => {
            args.op = fb::BackupOp::DisablePolicy;
            args.policy = Some(builder.create_string(name));
        }
    }
    fb::BackupRequest::create(builder, &args)
}

fn decode_backup_request(table: fb::BackupRequest<'_>) -> Result<BackupRequest, DecodeError> {
    Ok(match table.op() {
        fb::BackupOp::Start => BackupRequest::Start {
            table: owned_string(table.table()),
            url: owned_string(table.url()),
        },
        fb::BackupOp::List => BackupRequest::List {
            table: owned_string(table.table()),
        },
        fb::BackupOp::Query => BackupRequest::Query {
            backup_id: table.backup_id(),
        },
        fb::BackupOp::Restore => BackupRequest::Restore {
            url: owned_string(table.url()),
            backup_id: table.backup_id(),
            table: owned_string(table.table()),
            new_table: owned_string(table.new_table()),
        },
        fb::BackupOp::QueryRestore => BackupRequest::QueryRestore {
            table: owned_string(table.table()),
        },
        fb::BackupOp::CancelRestore => BackupRequest::CancelRestore {
            table: owned_string(table.table()),
        },
        fb::BackupOp::AddPolicy => BackupRequest::AddPolicy(BackupPolicySpec {
            name: owned_string(table.policy()),
            tables: owned_strings(table.tables()),
            url: owned_string(table.url()),
            interval_seconds: table.interval_seconds(),
            start_time: owned_string(table.start_time()),
            keep: table.keep(),
        }),
        fb::BackupOp::ListPolicies => BackupRequest::ListPolicies,
        fb::BackupOp::QueryPolicy => BackupRequest::QueryPolicy {
            name: owned_string(table.policy()),
        },
        fb::BackupOp::ModifyPolicy => BackupRequest::ModifyPolicy(BackupPolicyChange {
            name: owned_string(table.policy()),
            add_tables: owned_strings(table.tables()),
            remove_tables: owned_strings(table.remove_tables()),
            interval_seconds: table.interval_seconds(),
            start_time: owned_string(table.start_time()),
            keep: table.keep(),
        }),
        fb::BackupOp::EnablePolicy => BackupRequest::EnablePolicy {
            name: owned_string(table.policy()),
        },
        fb::BackupOp::DisablePolicy => BackupRequest::DisablePolicy {
            name: owned_string(table.policy()),
        },
        other => return Err(invalid(format!("unknown backup op {}", other.0))),
    })
}

fn fb_gpid(gpid: Gpid) -> fb::Gpid {
    fb::Gpid::new(gpid.app_id, gpid.partition_index)
}

type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

fn build_request(builder: &mut Builder, request: &Request) -> (fb::RequestBody, Union) {
    match request {
        Request::Get(key) => {
            let hash_key = Some(bytes(builder, &key.hash_key));
            let sort_key = Some(bytes(builder, &key.sort_key));
            let table = fb::GetRequest::create(builder, &fb::GetRequestArgs { hash_key, sort_key });
            (fb::RequestBody::GetRequest, table.as_union_value())
        }
        Request::Set {
            key,
            value,
            ttl_seconds,
        } => {
            let hash_key = Some(bytes(builder, &key.hash_key));
            let sort_key = Some(bytes(builder, &key.sort_key));
            let value = Some(bytes(builder, value));
            let table = fb::SetRequest::create(
                builder,
                &fb::SetRequestArgs {
                    hash_key,
                    sort_key,
                    value,
                    ttl_seconds: *ttl_seconds,
                },
            );
            (fb::RequestBody::SetRequest, table.as_union_value())
        }
        Request::Del(key) => {
            let hash_key = Some(bytes(builder, &key.hash_key));
            let sort_key = Some(bytes(builder, &key.sort_key));
            let table = fb::DelRequest::create(builder, &fb::DelRequestArgs { hash_key, sort_key });
            (fb::RequestBody::DelRequest, table.as_union_value())
        }
        Request::Exist(key) => {
            let hash_key = Some(bytes(builder, &key.hash_key));
            let sort_key = Some(bytes(builder, &key.sort_key));
            let table =
                fb::ExistRequest::create(builder, &fb::ExistRequestArgs { hash_key, sort_key });
            (fb::RequestBody::ExistRequest, table.as_union_value())
        }
        Request::Ttl(key) => {
            let hash_key = Some(bytes(builder, &key.hash_key));
            let sort_key = Some(bytes(builder, &key.sort_key));
            let table = fb::TtlRequest::create(builder, &fb::TtlRequestArgs { hash_key, sort_key });
            (fb::RequestBody::TtlRequest, table.as_union_value())
        }
        Request::MultiGet(request) => {
            let hash_key = Some(bytes(builder, &request.hash_key));
            let sort_keys = Some(byte_list(builder, &request.sort_keys));
            let start_sort_key = Some(bytes(builder, &request.start_sort_key));
            let stop_sort_key = Some(bytes(builder, &request.stop_sort_key));
            let sort_key_filter = filter(builder, &request.sort_key_filter);
            let table = fb::MultiGetRequest::create(
                builder,
                &fb::MultiGetRequestArgs {
                    hash_key,
                    sort_keys,
                    max_kv_count: request.max_kv_count,
                    max_kv_size: request.max_kv_size,
                    no_value: request.no_value,
                    start_sort_key,
                    stop_sort_key,
                    start_inclusive: request.start_inclusive,
                    stop_inclusive: request.stop_inclusive,
                    sort_key_filter,
                    reverse: request.reverse,
                },
            );
            (fb::RequestBody::MultiGetRequest, table.as_union_value())
        }
        Request::MultiSet {
            hash_key,
            kvs,
            ttl_seconds,
        } => {
            let hash_key = Some(bytes(builder, hash_key));
            let kvs = Some(sort_key_values(builder, kvs));
            let table = fb::MultiSetRequest::create(
                builder,
                &fb::MultiSetRequestArgs {
                    hash_key,
                    kvs,
                    ttl_seconds: *ttl_seconds,
                },
            );
            (fb::RequestBody::MultiSetRequest, table.as_union_value())
        }
        Request::MultiDel {
            hash_key,
            sort_keys,
        } => {
            let hash_key = Some(bytes(builder, hash_key));
            let sort_keys = Some(byte_list(builder, sort_keys));
            let table = fb::MultiDelRequest::create(
                builder,
                &fb::MultiDelRequestArgs {
                    hash_key,
                    sort_keys,
                },
            );
            (fb::RequestBody::MultiDelRequest, table.as_union_value())
        }
        Request::SortKeyCount { hash_key } => {
            let hash_key = Some(bytes(builder, hash_key));
            let table =
                fb::SortKeyCountRequest::create(builder, &fb::SortKeyCountRequestArgs { hash_key });
            (fb::RequestBody::SortKeyCountRequest, table.as_union_value())
        }
        Request::Incr {
            key,
            increment,
            ttl_seconds,
        } => {
            let hash_key = Some(bytes(builder, &key.hash_key));
            let sort_key = Some(bytes(builder, &key.sort_key));
            let table = fb::IncrRequest::create(
                builder,
                &fb::IncrRequestArgs {
                    hash_key,
                    sort_key,
                    increment: *increment,
                    ttl_seconds: *ttl_seconds,
                },
            );
            (fb::RequestBody::IncrRequest, table.as_union_value())
        }
        Request::CheckAndSet(request) => {
            let hash_key = Some(bytes(builder, &request.hash_key));
            let check_sort_key = Some(bytes(builder, &request.check_sort_key));
            let check_operand = Some(bytes(builder, &request.check_operand));
            let set_sort_key = Some(bytes(builder, &request.set_sort_key));
            let set_value = Some(bytes(builder, &request.set_value));
            let table = fb::CheckAndSetRequest::create(
                builder,
                &fb::CheckAndSetRequestArgs {
                    hash_key,
                    check_sort_key,
                    check_type: fb::CheckType(request.check_type as u8),
                    check_operand,
                    set_sort_key,
                    set_value,
                    set_ttl_seconds: request.set_ttl_seconds,
                    return_check_value: request.return_check_value,
                },
            );
            (fb::RequestBody::CheckAndSetRequest, table.as_union_value())
        }
        Request::CheckAndMutate(request) => {
            let hash_key = Some(bytes(builder, &request.hash_key));
            let check_sort_key = Some(bytes(builder, &request.check_sort_key));
            let check_operand = Some(bytes(builder, &request.check_operand));
            let mutations: Vec<_> = request
                .mutations
                .iter()
                .map(|mutation| build_mutation(builder, mutation))
                .collect();
            let mutations = Some(builder.create_vector(&mutations));
            let table = fb::CheckAndMutateRequest::create(
                builder,
                &fb::CheckAndMutateRequestArgs {
                    hash_key,
                    check_sort_key,
                    check_type: fb::CheckType(request.check_type as u8),
                    check_operand,
                    mutations,
                    return_check_value: request.return_check_value,
                },
            );
            (
                fb::RequestBody::CheckAndMutateRequest,
                table.as_union_value(),
            )
        }
        Request::BatchGet { keys } => {
            let offsets: Vec<_> = keys
                .iter()
                .map(|key| {
                    let hash_key = Some(bytes(builder, &key.hash_key));
                    let sort_key = Some(bytes(builder, &key.sort_key));
                    fb::Key::create(builder, &fb::KeyArgs { hash_key, sort_key })
                })
                .collect();
            let keys = Some(builder.create_vector(&offsets));
            let table = fb::BatchGetRequest::create(builder, &fb::BatchGetRequestArgs { keys });
            (fb::RequestBody::BatchGetRequest, table.as_union_value())
        }
        Request::GetScanner(request) => {
            let (range_kind, hash_key, start_sort_key, stop_sort_key) = match &request.range {
                ScanRange::Hash {
                    hash_key,
                    start_sort_key,
                    stop_sort_key,
                } => (
                    fb::ScanRangeKind::Hash,
                    Some(bytes(builder, hash_key)),
                    Some(bytes(builder, start_sort_key)),
                    Some(bytes(builder, stop_sort_key)),
                ),
                ScanRange::Full => (fb::ScanRangeKind::Full, None, None, None),
            };
            let hash_key_filter = filter(builder, &request.hash_key_filter);
            let sort_key_filter = filter(builder, &request.sort_key_filter);
            let table = fb::GetScannerRequest::create(
                builder,
                &fb::GetScannerRequestArgs {
                    range_kind,
                    hash_key,
                    start_sort_key,
                    stop_sort_key,
                    start_inclusive: request.start_inclusive,
                    stop_inclusive: request.stop_inclusive,
                    hash_key_filter,
                    sort_key_filter,
                    batch_size: request.batch_size,
                    no_value: request.no_value,
                    only_return_count: request.only_return_count,
                },
            );
            (fb::RequestBody::GetScannerRequest, table.as_union_value())
        }
        Request::Scan { context_id } => {
            let table = fb::ScanRequest::create(
                builder,
                &fb::ScanRequestArgs {
                    context_id: *context_id,
                },
            );
            (fb::RequestBody::ScanRequest, table.as_union_value())
        }
        Request::ClearScanner { context_id } => {
            let table = fb::ClearScannerRequest::create(
                builder,
                &fb::ClearScannerRequestArgs {
                    context_id: *context_id,
                },
            );
            (fb::RequestBody::ClearScannerRequest, table.as_union_value())
        }
        Request::QueryRoute { table } => {
            let name = Some(builder.create_string(table));
            let table =
                fb::QueryRouteRequest::create(builder, &fb::QueryRouteRequestArgs { table: name });
            (fb::RequestBody::QueryRouteRequest, table.as_union_value())
        }
        Request::CreateTable(request) => {
            let name = Some(builder.create_string(&request.table));
            let envs = Some(string_pairs(builder, &request.envs));
            let table = fb::CreateTableRequest::create(
                builder,
                &fb::CreateTableRequestArgs {
                    table: name,
                    partition_count: request.partition_count,
                    replica_count: request.replica_count,
                    envs,
                    success_if_exist: request.success_if_exist,
                },
            );
            (fb::RequestBody::CreateTableRequest, table.as_union_value())
        }
        Request::DropTable {
            table,
            reserve_seconds,
        } => {
            let name = Some(builder.create_string(table));
            let table = fb::DropTableRequest::create(
                builder,
                &fb::DropTableRequestArgs {
                    table: name,
                    reserve_seconds: *reserve_seconds,
                },
            );
            (fb::RequestBody::DropTableRequest, table.as_union_value())
        }
        Request::RecallTable { app_id, new_name } => {
            let new_name = Some(builder.create_string(new_name));
            let table = fb::RecallTableRequest::create(
                builder,
                &fb::RecallTableRequestArgs {
                    app_id: *app_id,
                    new_name,
                },
            );
            (fb::RequestBody::RecallTableRequest, table.as_union_value())
        }
        Request::ListTables { include_dropped } => {
            let table = fb::ListTablesRequest::create(
                builder,
                &fb::ListTablesRequestArgs {
                    include_dropped: *include_dropped,
                },
            );
            (fb::RequestBody::ListTablesRequest, table.as_union_value())
        }
        Request::DescribeTable { table } => {
            let name = Some(builder.create_string(table));
            let table = fb::DescribeTableRequest::create(
                builder,
                &fb::DescribeTableRequestArgs { table: name },
            );
            (
                fb::RequestBody::DescribeTableRequest,
                table.as_union_value(),
            )
        }
        Request::ListNodes => {
            let table = fb::ListNodesRequest::create(builder, &fb::ListNodesRequestArgs {});
            (fb::RequestBody::ListNodesRequest, table.as_union_value())
        }
        Request::ClusterInfo => {
            let table = fb::ClusterInfoRequest::create(builder, &fb::ClusterInfoRequestArgs {});
            (fb::RequestBody::ClusterInfoRequest, table.as_union_value())
        }
        Request::SetAppEnvs { table, envs } => {
            let name = Some(builder.create_string(table));
            let envs = Some(string_pairs(builder, envs));
            let table = fb::SetAppEnvsRequest::create(
                builder,
                &fb::SetAppEnvsRequestArgs { table: name, envs },
            );
            (fb::RequestBody::SetAppEnvsRequest, table.as_union_value())
        }
        Request::GetAppEnvs { table } => {
            let name = Some(builder.create_string(table));
            let table =
                fb::GetAppEnvsRequest::create(builder, &fb::GetAppEnvsRequestArgs { table: name });
            (fb::RequestBody::GetAppEnvsRequest, table.as_union_value())
        }
        Request::Beacon(beacon) => {
            let node = Some(builder.create_string(&beacon.node));
            let shard_addresses = Some(string_list(builder, &beacon.shard_addresses));
            let replicas: Vec<_> = beacon
                .replicas
                .iter()
                .map(|replica| hosted_replica(builder, replica))
                .collect();
            let replicas = Some(builder.create_vector(&replicas));
            let backups: Vec<_> = beacon
                .backups
                .iter()
                .map(|report| backup_report(builder, report))
                .collect();
            let backups = Some(builder.create_vector(&backups));
            let splits: Vec<_> = beacon
                .splits
                .iter()
                .map(|report| split_report(builder, report))
                .collect();
            let splits = Some(builder.create_vector(&splits));
            let dups: Vec<_> = beacon
                .dups
                .iter()
                .map(|report| dup_report(builder, report))
                .collect();
            let dups = Some(builder.create_vector(&dups));
            let table = fb::BeaconRequest::create(
                builder,
                &fb::BeaconRequestArgs {
                    node,
                    shard_addresses,
                    replicas,
                    incarnation: beacon.incarnation,
                    backups,
                    splits,
                    dups,
                },
            );
            (fb::RequestBody::BeaconRequest, table.as_union_value())
        }
        Request::RemoveSecondary { gpid, ballot, node } => {
            let gpid = fb_gpid(*gpid);
            let node = Some(builder.create_string(node));
            let table = fb::RemoveSecondaryRequest::create(
                builder,
                &fb::RemoveSecondaryRequestArgs {
                    gpid: Some(&gpid),
                    ballot: *ballot,
                    node,
                },
            );
            (
                fb::RequestBody::RemoveSecondaryRequest,
                table.as_union_value(),
            )
        }
        Request::UpgradeLearner { gpid, ballot, node } => {
            let gpid = fb_gpid(*gpid);
            let node = Some(builder.create_string(node));
            let table = fb::UpgradeLearnerRequest::create(
                builder,
                &fb::UpgradeLearnerRequestArgs {
                    gpid: Some(&gpid),
                    ballot: *ballot,
                    node,
                },
            );
            (
                fb::RequestBody::UpgradeLearnerRequest,
                table.as_union_value(),
            )
        }
        Request::Peer(peer) => {
            let table = peer_request(builder, peer);
            (fb::RequestBody::PeerRequest, table.as_union_value())
        }
        Request::SwitchPrimary { gpid, ballot, node } => {
            let gpid = fb_gpid(*gpid);
            let node = Some(builder.create_string(node));
            let table = fb::SwitchPrimaryRequest::create(
                builder,
                &fb::SwitchPrimaryRequestArgs {
                    gpid: Some(&gpid),
                    ballot: *ballot,
                    node,
                },
            );
            (
                fb::RequestBody::SwitchPrimaryRequest,
                table.as_union_value(),
            )
        }
        Request::Balancer(request) => {
            let table = balancer_request(builder, request);
            (fb::RequestBody::BalancerRequest, table.as_union_value())
        }
        Request::Backup(request) => {
            let table = backup_request(builder, request);
            (fb::RequestBody::BackupRequest, table.as_union_value())
        }
        Request::PartitionSplit(request) => {
            let table = split_request(builder, request);
            (
                fb::RequestBody::PartitionSplitRequest,
                table.as_union_value(),
            )
        }
        Request::Dup(request) => {
            let table = dup_request(builder, request);
            (fb::RequestBody::DupRequest, table.as_union_value())
        }
        Request::Duplicate(request) => {
            let table = duplicate_request(builder, request);
            (fb::RequestBody::DuplicateRequest, table.as_union_value())
        }
    }
}

fn build_mutation(builder: &mut Builder, mutation: &Mutation) -> WIPOffset<fb::Mutation<'static>> {
    match mutation {
        Mutation::Put {
            sort_key,
            value,
            ttl_seconds,
        } => {
            let sort_key = Some(bytes(builder, sort_key));
            let value = Some(bytes(builder, value));
            fb::Mutation::create(
                builder,
                &fb::MutationArgs {
                    op: fb::MutationOp::Put,
                    sort_key,
                    value,
                    ttl_seconds: *ttl_seconds,
                },
            )
        }
        Mutation::Delete { sort_key } => {
            let sort_key = Some(bytes(builder, sort_key));
            fb::Mutation::create(
                builder,
                &fb::MutationArgs {
                    op: fb::MutationOp::Delete,
                    sort_key,
                    value: None,
                    ttl_seconds: 0,
                },
            )
        }
    }
}

fn build_response_body(builder: &mut Builder, body: &ResponseBody) -> (fb::ResponseBody, Union) {
    match body {
        ResponseBody::Done => {
            let table = fb::DoneResponse::create(builder, &fb::DoneResponseArgs {});
            (fb::ResponseBody::DoneResponse, table.as_union_value())
        }
        ResponseBody::Value(value) => {
            let value = Some(bytes(builder, value));
            let table = fb::ValueResponse::create(builder, &fb::ValueResponseArgs { value });
            (fb::ResponseBody::ValueResponse, table.as_union_value())
        }
        ResponseBody::Exist(exist) => {
            let table =
                fb::ExistResponse::create(builder, &fb::ExistResponseArgs { exist: *exist });
            (fb::ResponseBody::ExistResponse, table.as_union_value())
        }
        ResponseBody::Ttl(ttl_seconds) => {
            let table = fb::TtlResponse::create(
                builder,
                &fb::TtlResponseArgs {
                    ttl_seconds: *ttl_seconds,
                },
            );
            (fb::ResponseBody::TtlResponse, table.as_union_value())
        }
        ResponseBody::MultiGet { kvs, incomplete } => {
            let kvs = Some(sort_key_values(builder, kvs));
            let table = fb::MultiGetResponse::create(
                builder,
                &fb::MultiGetResponseArgs {
                    kvs,
                    incomplete: *incomplete,
                },
            );
            (fb::ResponseBody::MultiGetResponse, table.as_union_value())
        }
        ResponseBody::Count(count) => {
            let table =
                fb::CountResponse::create(builder, &fb::CountResponseArgs { count: *count });
            (fb::ResponseBody::CountResponse, table.as_union_value())
        }
        ResponseBody::Incr(new_value) => {
            let table = fb::IncrResponse::create(
                builder,
                &fb::IncrResponseArgs {
                    new_value: *new_value,
                },
            );
            (fb::ResponseBody::IncrResponse, table.as_union_value())
        }
        ResponseBody::CheckAndSet(result) => {
            let check_value = Some(bytes(builder, &result.check_value));
            let table = fb::CheckAndSetResponse::create(
                builder,
                &fb::CheckAndSetResponseArgs {
                    set_succeeded: result.set_succeeded,
                    check_value_returned: result.check_value_returned,
                    check_value_exist: result.check_value_exist,
                    check_value,
                },
            );
            (
                fb::ResponseBody::CheckAndSetResponse,
                table.as_union_value(),
            )
        }
        ResponseBody::BatchGet(found) => {
            let records = Some(records(builder, found));
            let table =
                fb::BatchGetResponse::create(builder, &fb::BatchGetResponseArgs { records });
            (fb::ResponseBody::BatchGetResponse, table.as_union_value())
        }
        ResponseBody::Scan {
            records: found,
            count,
            context_id,
        } => {
            let records = Some(records(builder, found));
            let table = fb::ScanResponse::create(
                builder,
                &fb::ScanResponseArgs {
                    records,
                    count: *count,
                    context_id: *context_id,
                },
            );
            (fb::ResponseBody::ScanResponse, table.as_union_value())
        }
        ResponseBody::Route(route) => {
            let table_name = Some(builder.create_string(&route.table));
            let partitions: Vec<_> = route
                .partitions
                .iter()
                .map(|partition| {
                    let address = Some(builder.create_string(&partition.address));
                    fb::PartitionRoute::create(
                        builder,
                        &fb::PartitionRouteArgs {
                            partition_index: partition.partition_index,
                            address,
                            ballot: partition.ballot,
                        },
                    )
                })
                .collect();
            let partitions = Some(builder.create_vector(&partitions));
            let table = fb::RouteResponse::create(
                builder,
                &fb::RouteResponseArgs {
                    table: table_name,
                    app_id: route.app_id,
                    partition_count: route.partition_count,
                    partitions,
                },
            );
            (fb::ResponseBody::RouteResponse, table.as_union_value())
        }
        ResponseBody::Table(info) => {
            let info = Some(table_info(builder, info));
            let table = fb::TableResponse::create(builder, &fb::TableResponseArgs { info });
            (fb::ResponseBody::TableResponse, table.as_union_value())
        }
        ResponseBody::Tables(tables) => {
            let offsets: Vec<_> = tables
                .iter()
                .map(|info| table_info(builder, info))
                .collect();
            let tables = Some(builder.create_vector(&offsets));
            let table = fb::TablesResponse::create(builder, &fb::TablesResponseArgs { tables });
            (fb::ResponseBody::TablesResponse, table.as_union_value())
        }
        ResponseBody::Description(description) => {
            let info = Some(table_info(builder, &description.info));
            let offsets: Vec<_> = description
                .partitions
                .iter()
                .map(|partition| partition_config(builder, partition))
                .collect();
            let partitions = Some(builder.create_vector(&offsets));
            let table = fb::DescriptionResponse::create(
                builder,
                &fb::DescriptionResponseArgs { info, partitions },
            );
            (
                fb::ResponseBody::DescriptionResponse,
                table.as_union_value(),
            )
        }
        ResponseBody::Nodes(nodes) => {
            let offsets: Vec<_> = nodes.iter().map(|node| node_info(builder, node)).collect();
            let nodes = Some(builder.create_vector(&offsets));
            let table = fb::NodesResponse::create(builder, &fb::NodesResponseArgs { nodes });
            (fb::ResponseBody::NodesResponse, table.as_union_value())
        }
        ResponseBody::Pairs(pairs) => {
            let pairs = Some(string_pairs(builder, pairs));
            let table = fb::PairsResponse::create(builder, &fb::PairsResponseArgs { pairs });
            (fb::ResponseBody::PairsResponse, table.as_union_value())
        }
        ResponseBody::BeaconAck(ack) => {
            let offsets: Vec<_> = ack
                .assignments
                .iter()
                .map(|assignment| replica_assignment(builder, assignment))
                .collect();
            let assignments = Some(builder.create_vector(&offsets));
            let drops: Vec<fb::Gpid> = ack.drops.iter().copied().map(fb_gpid).collect();
            let drops = Some(builder.create_vector(&drops));
            let backups: Vec<_> = ack
                .backups
                .iter()
                .map(|order| backup_order(builder, order))
                .collect();
            let backups = Some(builder.create_vector(&backups));
            let restores: Vec<_> = ack
                .restores
                .iter()
                .map(|order| restore_order(builder, order))
                .collect();
            let restores = Some(builder.create_vector(&restores));
            let splits: Vec<_> = ack
                .splits
                .iter()
                .map(|order| split_order(builder, order))
                .collect();
            let splits = Some(builder.create_vector(&splits));
            let dups: Vec<_> = ack
                .dups
                .iter()
                .map(|order| dup_order(builder, order))
                .collect();
            let dups = Some(builder.create_vector(&dups));
            let table = fb::BeaconAckResponse::create(
                builder,
                &fb::BeaconAckResponseArgs {
                    assignments,
                    drops,
                    lease_ms: ack.lease_ms,
                    replica_count_min_alive: ack.replica_count_min_alive,
                    beacon_again_ms: ack.beacon_again_ms,
                    backups,
                    restores,
                    splits,
                    dups,
                    cluster_id: ack.cluster_id,
                },
            );
            (fb::ResponseBody::BeaconAckResponse, table.as_union_value())
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding.

fn verifier_options(body_bytes: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: VERIFY_DEPTH_MAX,
        // Every table visit reads at least a 4-byte offset to it.
        max_tables: body_bytes / 4 + 64,
        max_apparent_size: body_bytes
            .saturating_mul(VERIFY_APPARENT_BYTES_PER_BODY_BYTE_MAX)
            .saturating_add(4096),
        ..VerifierOptions::default()
    }
}

fn owned(vector: Option<Vector<'_, u8>>) -> Vec<u8> {
    vector
        .map(|vector| vector.bytes().to_vec())
        .unwrap_or_default()
}

fn owned_list(list: Option<Vector<'_, ForwardsUOffset<fb::Bytes<'_>>>>) -> Vec<Vec<u8>> {
    list.map(|list| list.iter().map(|item| owned(item.data())).collect())
        .unwrap_or_default()
}

fn decode_filter(table: Option<fb::Filter<'_>>, what: &str) -> Result<Filter, DecodeError> {
    let Some(table) = table else {
        return Ok(Filter::none());
    };
    let kind = match table.kind() {
        fb::FilterType::NoFilter => FilterType::NoFilter,
        fb::FilterType::MatchAnywhere => FilterType::MatchAnywhere,
        fb::FilterType::MatchPrefix => FilterType::MatchPrefix,
        fb::FilterType::MatchPostfix => FilterType::MatchPostfix,
        other => return Err(invalid(format!("{what}: unknown filter type {}", other.0))),
    };
    Ok(Filter {
        kind,
        pattern: owned(table.pattern()),
    })
}

fn decode_check_type(value: fb::CheckType) -> Result<CheckType, DecodeError> {
    CheckType::from_u8(value.0).ok_or_else(|| invalid(format!("unknown check type {}", value.0)))
}

fn decode_sort_key_values(
    list: Option<Vector<'_, ForwardsUOffset<fb::SortKeyValue<'_>>>>,
) -> Vec<SortKeyValue> {
    list.map(|list| {
        list.iter()
            .map(|kv| SortKeyValue {
                sort_key: owned(kv.sort_key()),
                value: owned(kv.value()),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn decode_records(list: Option<Vector<'_, ForwardsUOffset<fb::Record<'_>>>>) -> Vec<Record> {
    list.map(|list| {
        list.iter()
            .map(|record| Record {
                hash_key: owned(record.hash_key()),
                sort_key: owned(record.sort_key()),
                value: owned(record.value()),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn owned_string(string: Option<&str>) -> String {
    string.unwrap_or_default().to_string()
}

fn owned_strings(list: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    list.map(|list| list.iter().map(|string| string.to_string()).collect())
        .unwrap_or_default()
}

fn owned_ints(list: Option<Vector<'_, i32>>) -> Vec<i32> {
    list.map(|list| list.iter().collect()).unwrap_or_default()
}

fn decode_string_pairs(
    list: Option<Vector<'_, ForwardsUOffset<fb::StringPair<'_>>>>,
) -> Vec<(String, String)> {
    list.map(|list| {
        list.iter()
            .map(|pair| (owned_string(pair.key()), owned_string(pair.value())))
            .collect()
    })
    .unwrap_or_default()
}

fn decode_gpid(gpid: &fb::Gpid) -> Gpid {
    Gpid {
        app_id: gpid.app_id(),
        partition_index: gpid.partition_index(),
    }
}

fn decode_replica_role(role: fb::ReplicaRole) -> Result<ReplicaRole, DecodeError> {
    match role {
        fb::ReplicaRole::Primary => Ok(ReplicaRole::Primary),
        fb::ReplicaRole::Secondary => Ok(ReplicaRole::Secondary),
        fb::ReplicaRole::Learner => Ok(ReplicaRole::Learner),
        fb::ReplicaRole::Inactive => Ok(ReplicaRole::Inactive),
        other => Err(invalid(format!("unknown replica role {}", other.0))),
    }
}

fn decode_table_info(table: fb::TableInfo<'_>) -> Result<TableInfo, DecodeError> {
    let status = match table.status() {
        fb::TableStatus::Available => TableStatus::Available,
        fb::TableStatus::Dropped => TableStatus::Dropped,
        other => return Err(invalid(format!("unknown table status {}", other.0))),
    };
    Ok(TableInfo {
        app_id: table.app_id(),
        name: owned_string(table.name()),
        status,
        partition_count: table.partition_count(),
        replica_count: table.replica_count(),
        envs: decode_string_pairs(table.envs()),
        create_time_s: table.create_time_s(),
        drop_time_s: table.drop_time_s(),
        drop_expire_s: table.drop_expire_s(),
    })
}

/// A required table info: absent is an error, not a default, so a reply
/// that lost its table never reads as table 0.
fn decode_required_table_info(
    table: Option<fb::TableInfo<'_>>,
    what: &str,
) -> Result<TableInfo, DecodeError> {
    let table = table.ok_or_else(|| invalid(format!("{what} carries no table info")))?;
    decode_table_info(table)
}

fn missing_body(kind: &str) -> DecodeError {
    invalid(format!(
        "{kind} envelope names a body type but carries no body"
    ))
}

/// Decodes a request frame body. Verifies the flatbuffer, then every enum
/// value; never panics.
pub fn decode_request(body: &[u8]) -> Result<(Envelope, Request), DecodeError> {
    let root =
        flatbuffers::root_with_opts::<fb::RequestEnvelope>(&verifier_options(body.len()), body)?;
    let envelope = Envelope {
        request_id: root.request_id(),
        timeout_ms: root.timeout_ms(),
        gpid: Gpid {
            app_id: root.app_id(),
            partition_index: root.partition_index(),
        },
        partition_hash: root.partition_hash(),
        partition_count: root.partition_count(),
    };
    let missing = || missing_body("request");
    let request = match root.body_type() {
        fb::RequestBody::NONE => return Err(invalid("request envelope has no body")),
        fb::RequestBody::GetRequest => {
            let table = root.body_as_get_request().ok_or_else(missing)?;
            Request::Get(Key {
                hash_key: owned(table.hash_key()),
                sort_key: owned(table.sort_key()),
            })
        }
        fb::RequestBody::SetRequest => {
            let table = root.body_as_set_request().ok_or_else(missing)?;
            Request::Set {
                key: Key {
                    hash_key: owned(table.hash_key()),
                    sort_key: owned(table.sort_key()),
                },
                value: owned(table.value()),
                ttl_seconds: table.ttl_seconds(),
            }
        }
        fb::RequestBody::DelRequest => {
            let table = root.body_as_del_request().ok_or_else(missing)?;
            Request::Del(Key {
                hash_key: owned(table.hash_key()),
                sort_key: owned(table.sort_key()),
            })
        }
        fb::RequestBody::ExistRequest => {
            let table = root.body_as_exist_request().ok_or_else(missing)?;
            Request::Exist(Key {
                hash_key: owned(table.hash_key()),
                sort_key: owned(table.sort_key()),
            })
        }
        fb::RequestBody::TtlRequest => {
            let table = root.body_as_ttl_request().ok_or_else(missing)?;
            Request::Ttl(Key {
                hash_key: owned(table.hash_key()),
                sort_key: owned(table.sort_key()),
            })
        }
        fb::RequestBody::MultiGetRequest => {
            let table = root.body_as_multi_get_request().ok_or_else(missing)?;
            Request::MultiGet(MultiGetRequest {
                hash_key: owned(table.hash_key()),
                sort_keys: owned_list(table.sort_keys()),
                max_kv_count: table.max_kv_count(),
                max_kv_size: table.max_kv_size(),
                no_value: table.no_value(),
                start_sort_key: owned(table.start_sort_key()),
                stop_sort_key: owned(table.stop_sort_key()),
                start_inclusive: table.start_inclusive(),
                stop_inclusive: table.stop_inclusive(),
                sort_key_filter: decode_filter(
                    table.sort_key_filter(),
                    "multi_get sort key filter",
                )?,
                reverse: table.reverse(),
            })
        }
        fb::RequestBody::MultiSetRequest => {
            let table = root.body_as_multi_set_request().ok_or_else(missing)?;
            Request::MultiSet {
                hash_key: owned(table.hash_key()),
                kvs: decode_sort_key_values(table.kvs()),
                ttl_seconds: table.ttl_seconds(),
            }
        }
        fb::RequestBody::MultiDelRequest => {
            let table = root.body_as_multi_del_request().ok_or_else(missing)?;
            Request::MultiDel {
                hash_key: owned(table.hash_key()),
                sort_keys: owned_list(table.sort_keys()),
            }
        }
        fb::RequestBody::SortKeyCountRequest => {
            let table = root.body_as_sort_key_count_request().ok_or_else(missing)?;
            Request::SortKeyCount {
                hash_key: owned(table.hash_key()),
            }
        }
        fb::RequestBody::IncrRequest => {
            let table = root.body_as_incr_request().ok_or_else(missing)?;
            Request::Incr {
                key: Key {
                    hash_key: owned(table.hash_key()),
                    sort_key: owned(table.sort_key()),
                },
                increment: table.increment(),
                ttl_seconds: table.ttl_seconds(),
            }
        }
        fb::RequestBody::CheckAndSetRequest => {
            let table = root.body_as_check_and_set_request().ok_or_else(missing)?;
            Request::CheckAndSet(CheckAndSetRequest {
                hash_key: owned(table.hash_key()),
                check_sort_key: owned(table.check_sort_key()),
                check_type: decode_check_type(table.check_type())?,
                check_operand: owned(table.check_operand()),
                set_sort_key: owned(table.set_sort_key()),
                set_value: owned(table.set_value()),
                set_ttl_seconds: table.set_ttl_seconds(),
                return_check_value: table.return_check_value(),
            })
        }
        fb::RequestBody::CheckAndMutateRequest => {
            let table = root
                .body_as_check_and_mutate_request()
                .ok_or_else(missing)?;
            let mut mutations = Vec::new();
            for mutation in table.mutations().iter().flat_map(|list| list.iter()) {
                let sort_key = owned(mutation.sort_key());
                mutations.push(match mutation.op() {
                    fb::MutationOp::Put => Mutation::Put {
                        sort_key,
                        value: owned(mutation.value()),
                        ttl_seconds: mutation.ttl_seconds(),
                    },
                    fb::MutationOp::Delete => Mutation::Delete { sort_key },
                    other => return Err(invalid(format!("unknown mutation op {}", other.0))),
                });
            }
            Request::CheckAndMutate(CheckAndMutateRequest {
                hash_key: owned(table.hash_key()),
                check_sort_key: owned(table.check_sort_key()),
                check_type: decode_check_type(table.check_type())?,
                check_operand: owned(table.check_operand()),
                mutations,
                return_check_value: table.return_check_value(),
            })
        }
        fb::RequestBody::BatchGetRequest => {
            let table = root.body_as_batch_get_request().ok_or_else(missing)?;
            let keys = table
                .keys()
                .map(|keys| {
                    keys.iter()
                        .map(|key| Key {
                            hash_key: owned(key.hash_key()),
                            sort_key: owned(key.sort_key()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Request::BatchGet { keys }
        }
        fb::RequestBody::GetScannerRequest => {
            let table = root.body_as_get_scanner_request().ok_or_else(missing)?;
            let range = match table.range_kind() {
                fb::ScanRangeKind::Hash => ScanRange::Hash {
                    hash_key: owned(table.hash_key()),
                    start_sort_key: owned(table.start_sort_key()),
                    stop_sort_key: owned(table.stop_sort_key()),
                },
                // A full scan has no range keys; any sent are ignored.
                fb::ScanRangeKind::Full => ScanRange::Full,
                other => return Err(invalid(format!("unknown scan range kind {}", other.0))),
            };
            Request::GetScanner(ScanRequest {
                range,
                start_inclusive: table.start_inclusive(),
                stop_inclusive: table.stop_inclusive(),
                hash_key_filter: decode_filter(table.hash_key_filter(), "scan hash key filter")?,
                sort_key_filter: decode_filter(table.sort_key_filter(), "scan sort key filter")?,
                batch_size: table.batch_size(),
                no_value: table.no_value(),
                only_return_count: table.only_return_count(),
            })
        }
        fb::RequestBody::ScanRequest => {
            let table = root.body_as_scan_request().ok_or_else(missing)?;
            Request::Scan {
                context_id: table.context_id(),
            }
        }
        fb::RequestBody::ClearScannerRequest => {
            let table = root.body_as_clear_scanner_request().ok_or_else(missing)?;
            Request::ClearScanner {
                context_id: table.context_id(),
            }
        }
        fb::RequestBody::QueryRouteRequest => {
            let table = root.body_as_query_route_request().ok_or_else(missing)?;
            Request::QueryRoute {
                table: table.table().unwrap_or_default().to_string(),
            }
        }
        fb::RequestBody::CreateTableRequest => {
            let table = root.body_as_create_table_request().ok_or_else(missing)?;
            Request::CreateTable(CreateTableRequest {
                table: owned_string(table.table()),
                partition_count: table.partition_count(),
                replica_count: table.replica_count(),
                envs: decode_string_pairs(table.envs()),
                success_if_exist: table.success_if_exist(),
            })
        }
        fb::RequestBody::DropTableRequest => {
            let table = root.body_as_drop_table_request().ok_or_else(missing)?;
            Request::DropTable {
                table: owned_string(table.table()),
                reserve_seconds: table.reserve_seconds(),
            }
        }
        fb::RequestBody::RecallTableRequest => {
            let table = root.body_as_recall_table_request().ok_or_else(missing)?;
            Request::RecallTable {
                app_id: table.app_id(),
                new_name: owned_string(table.new_name()),
            }
        }
        fb::RequestBody::ListTablesRequest => {
            let table = root.body_as_list_tables_request().ok_or_else(missing)?;
            Request::ListTables {
                include_dropped: table.include_dropped(),
            }
        }
        fb::RequestBody::DescribeTableRequest => {
            let table = root.body_as_describe_table_request().ok_or_else(missing)?;
            Request::DescribeTable {
                table: owned_string(table.table()),
            }
        }
        fb::RequestBody::ListNodesRequest => {
            root.body_as_list_nodes_request().ok_or_else(missing)?;
            Request::ListNodes
        }
        fb::RequestBody::ClusterInfoRequest => {
            root.body_as_cluster_info_request().ok_or_else(missing)?;
            Request::ClusterInfo
        }
        fb::RequestBody::SetAppEnvsRequest => {
            let table = root.body_as_set_app_envs_request().ok_or_else(missing)?;
            Request::SetAppEnvs {
                table: owned_string(table.table()),
                envs: decode_string_pairs(table.envs()),
            }
        }
        fb::RequestBody::GetAppEnvsRequest => {
            let table = root.body_as_get_app_envs_request().ok_or_else(missing)?;
            Request::GetAppEnvs {
                table: owned_string(table.table()),
            }
        }
        fb::RequestBody::BeaconRequest => {
            let table = root.body_as_beacon_request().ok_or_else(missing)?;
            let mut replicas = Vec::new();
            for replica in table.replicas().iter().flat_map(|list| list.iter()) {
                let gpid = replica
                    .gpid()
                    .ok_or_else(|| invalid("beacon replica carries no gpid"))?;
                replicas.push(HostedReplica {
                    gpid: decode_gpid(gpid),
                    shard: replica.shard(),
                    ballot: replica.ballot(),
                    decree_applied: replica.decree_applied(),
                    role: decode_replica_role(replica.role())?,
                    decree_prepared: replica.decree_prepared(),
                    decree_committed: replica.decree_committed(),
                });
            }
            let mut backups = Vec::new();
            for report in table.backups().iter().flat_map(|list| list.iter()) {
                backups.push(decode_backup_report(report)?);
            }
            let mut splits = Vec::new();
            for report in table.splits().iter().flat_map(|list| list.iter()) {
                splits.push(decode_split_report(report)?);
            }
            let mut dups = Vec::new();
            for report in table.dups().iter().flat_map(|list| list.iter()) {
                dups.push(decode_dup_report(report)?);
            }
            Request::Beacon(NodeBeacon {
                node: owned_string(table.node()),
                shard_addresses: owned_strings(table.shard_addresses()),
                replicas,
                incarnation: table.incarnation(),
                backups,
                splits,
                dups,
            })
        }
        fb::RequestBody::RemoveSecondaryRequest => {
            let table = root
                .body_as_remove_secondary_request()
                .ok_or_else(missing)?;
            let gpid = table
                .gpid()
                .ok_or_else(|| invalid("remove_secondary carries no gpid"))?;
            Request::RemoveSecondary {
                gpid: decode_gpid(gpid),
                ballot: table.ballot(),
                node: owned_string(table.node()),
            }
        }
        fb::RequestBody::UpgradeLearnerRequest => {
            let table = root.body_as_upgrade_learner_request().ok_or_else(missing)?;
            let gpid = table
                .gpid()
                .ok_or_else(|| invalid("upgrade_learner carries no gpid"))?;
            Request::UpgradeLearner {
                gpid: decode_gpid(gpid),
                ballot: table.ballot(),
                node: owned_string(table.node()),
            }
        }
        fb::RequestBody::PeerRequest => {
            let table = root.body_as_peer_request().ok_or_else(missing)?;
            Request::Peer(decode_peer_request(table)?)
        }
        fb::RequestBody::SwitchPrimaryRequest => {
            let table = root.body_as_switch_primary_request().ok_or_else(missing)?;
            let gpid = table
                .gpid()
                .ok_or_else(|| invalid("switch_primary carries no gpid"))?;
            Request::SwitchPrimary {
                gpid: decode_gpid(gpid),
                ballot: table.ballot(),
                node: owned_string(table.node()),
            }
        }
        fb::RequestBody::BalancerRequest => {
            let table = root.body_as_balancer_request().ok_or_else(missing)?;
            Request::Balancer(decode_balancer_request(table)?)
        }
        fb::RequestBody::BackupRequest => {
            let table = root.body_as_backup_request().ok_or_else(missing)?;
            Request::Backup(decode_backup_request(table)?)
        }
        fb::RequestBody::PartitionSplitRequest => {
            let table = root.body_as_partition_split_request().ok_or_else(missing)?;
            Request::PartitionSplit(decode_split_request(table)?)
        }
        fb::RequestBody::DupRequest => {
            let table = root.body_as_dup_request().ok_or_else(missing)?;
            Request::Dup(decode_dup_request(table)?)
        }
        fb::RequestBody::DuplicateRequest => {
            let table = root.body_as_duplicate_request().ok_or_else(missing)?;
            Request::Duplicate(decode_duplicate_request(table))
        }
        other => return Err(invalid(format!("unknown request body type {}", other.0))),
    };
    Ok((envelope, request))
}

/// Decodes a response frame body into its request id and response.
/// Verifies the flatbuffer, then every enum value; never panics. An error
/// response must carry no body and a success response must carry one.
pub fn decode_response(body: &[u8]) -> Result<(u64, Response), DecodeError> {
    let root =
        flatbuffers::root_with_opts::<fb::ResponseEnvelope>(&verifier_options(body.len()), body)?;
    let request_id = root.request_id();
    let code = ErrorCode::from_i16(root.error().0)
        .ok_or_else(|| invalid(format!("unknown error code {}", root.error().0)))?;
    if code != ErrorCode::Ok {
        if root.body_type() != fb::ResponseBody::NONE {
            return Err(invalid(format!("error response {code} carries a body")));
        }
        let message = root.message().unwrap_or_default().to_string();
        return Ok((request_id, Err(OpError { code, message })));
    }
    let missing = || missing_body("response");
    let body = match root.body_type() {
        fb::ResponseBody::NONE => return Err(invalid("success response has no body")),
        fb::ResponseBody::DoneResponse => {
            root.body_as_done_response().ok_or_else(missing)?;
            ResponseBody::Done
        }
        fb::ResponseBody::ValueResponse => {
            let table = root.body_as_value_response().ok_or_else(missing)?;
            ResponseBody::Value(owned(table.value()))
        }
        fb::ResponseBody::ExistResponse => {
            let table = root.body_as_exist_response().ok_or_else(missing)?;
            ResponseBody::Exist(table.exist())
        }
        fb::ResponseBody::TtlResponse => {
            let table = root.body_as_ttl_response().ok_or_else(missing)?;
            ResponseBody::Ttl(table.ttl_seconds())
        }
        fb::ResponseBody::MultiGetResponse => {
            let table = root.body_as_multi_get_response().ok_or_else(missing)?;
            ResponseBody::MultiGet {
                kvs: decode_sort_key_values(table.kvs()),
                incomplete: table.incomplete(),
            }
        }
        fb::ResponseBody::CountResponse => {
            let table = root.body_as_count_response().ok_or_else(missing)?;
            ResponseBody::Count(table.count())
        }
        fb::ResponseBody::IncrResponse => {
            let table = root.body_as_incr_response().ok_or_else(missing)?;
            ResponseBody::Incr(table.new_value())
        }
        fb::ResponseBody::CheckAndSetResponse => {
            let table = root.body_as_check_and_set_response().ok_or_else(missing)?;
            ResponseBody::CheckAndSet(CheckAndSetResult {
                set_succeeded: table.set_succeeded(),
                check_value_returned: table.check_value_returned(),
                check_value_exist: table.check_value_exist(),
                check_value: owned(table.check_value()),
            })
        }
        fb::ResponseBody::BatchGetResponse => {
            let table = root.body_as_batch_get_response().ok_or_else(missing)?;
            ResponseBody::BatchGet(decode_records(table.records()))
        }
        fb::ResponseBody::ScanResponse => {
            let table = root.body_as_scan_response().ok_or_else(missing)?;
            ResponseBody::Scan {
                records: decode_records(table.records()),
                count: table.count(),
                context_id: table.context_id(),
            }
        }
        fb::ResponseBody::RouteResponse => {
            let table = root.body_as_route_response().ok_or_else(missing)?;
            let partitions = table
                .partitions()
                .map(|partitions| {
                    partitions
                        .iter()
                        .map(|partition| PartitionRoute {
                            partition_index: partition.partition_index(),
                            address: partition.address().unwrap_or_default().to_string(),
                            ballot: partition.ballot(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ResponseBody::Route(Route {
                table: table.table().unwrap_or_default().to_string(),
                app_id: table.app_id(),
                partition_count: table.partition_count(),
                partitions,
            })
        }
        fb::ResponseBody::TableResponse => {
            let table = root.body_as_table_response().ok_or_else(missing)?;
            ResponseBody::Table(decode_required_table_info(table.info(), "table response")?)
        }
        fb::ResponseBody::TablesResponse => {
            let table = root.body_as_tables_response().ok_or_else(missing)?;
            let mut tables = Vec::new();
            for info in table.tables().iter().flat_map(|list| list.iter()) {
                tables.push(decode_table_info(info)?);
            }
            ResponseBody::Tables(tables)
        }
        fb::ResponseBody::DescriptionResponse => {
            let table = root.body_as_description_response().ok_or_else(missing)?;
            let partitions = table
                .partitions()
                .map(|partitions| {
                    partitions
                        .iter()
                        .map(|partition| PartitionConfig {
                            partition_index: partition.partition_index(),
                            ballot: partition.ballot(),
                            primary: owned_string(partition.primary()),
                            secondaries: owned_strings(partition.secondaries()),
                            learners: owned_strings(partition.learners()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ResponseBody::Description(TableDescription {
                info: decode_required_table_info(table.info(), "description response")?,
                partitions,
            })
        }
        fb::ResponseBody::NodesResponse => {
            let table = root.body_as_nodes_response().ok_or_else(missing)?;
            let nodes = table
                .nodes()
                .map(|nodes| {
                    nodes
                        .iter()
                        .map(|node| NodeInfo {
                            node: owned_string(node.node()),
                            shard_addresses: owned_strings(node.shard_addresses()),
                            alive: node.alive(),
                            replica_count: node.replica_count(),
                            last_beacon_ms_ago: node.last_beacon_ms_ago(),
                            primary_count: node.primary_count(),
                            shard_replica_counts: owned_ints(node.shard_replica_counts()),
                            shard_primary_counts: owned_ints(node.shard_primary_counts()),
                            removing: node.removing(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ResponseBody::Nodes(nodes)
        }
        fb::ResponseBody::PairsResponse => {
            let table = root.body_as_pairs_response().ok_or_else(missing)?;
            ResponseBody::Pairs(decode_string_pairs(table.pairs()))
        }
        fb::ResponseBody::BeaconAckResponse => {
            let table = root.body_as_beacon_ack_response().ok_or_else(missing)?;
            let assignments = table
                .assignments()
                .map(|assignments| {
                    assignments
                        .iter()
                        .map(|assignment| ReplicaAssignment {
                            table: owned_string(assignment.table()),
                            app_id: assignment.app_id(),
                            partition_index: assignment.partition_index(),
                            partition_count: assignment.partition_count(),
                            shard: assignment.shard(),
                            ballot: assignment.ballot(),
                            primary: owned_string(assignment.primary()),
                            secondaries: owned_strings(assignment.secondaries()),
                            member_addresses: owned_strings(assignment.member_addresses()),
                            learners: owned_strings(assignment.learners()),
                            replica_count: assignment.replica_count(),
                            handoff_to: owned_string(assignment.handoff_to()),
                            split_child: assignment.split_child(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let drops = table
                .drops()
                .map(|drops| drops.iter().map(decode_gpid).collect())
                .unwrap_or_default();
            let mut backups = Vec::new();
            for order in table.backups().iter().flat_map(|list| list.iter()) {
                backups.push(decode_backup_order(order)?);
            }
            let mut restores = Vec::new();
            for order in table.restores().iter().flat_map(|list| list.iter()) {
                restores.push(decode_restore_order(order)?);
            }
            let mut splits = Vec::new();
            for order in table.splits().iter().flat_map(|list| list.iter()) {
                splits.push(decode_split_order(order)?);
            }
            let mut dups = Vec::new();
            for order in table.dups().iter().flat_map(|list| list.iter()) {
                dups.push(decode_dup_order(order)?);
            }
            ResponseBody::BeaconAck(BeaconAck {
                assignments,
                drops,
                lease_ms: table.lease_ms(),
                replica_count_min_alive: table.replica_count_min_alive(),
                beacon_again_ms: table.beacon_again_ms(),
                backups,
                restores,
                splits,
                dups,
                cluster_id: table.cluster_id(),
            })
        }
        other => return Err(invalid(format!("unknown response body type {}", other.0))),
    };
    Ok((request_id, Ok(body)))
}

/// The request id of a request body, read with bounds checks on only the
/// bytes it needs, so it works on bodies the full decoder rejects (an
/// unknown body type, a corrupt list) as long as the envelope's root table
/// is intact. `None` when it cannot be read; 0 when the id field is absent
/// (its schema default). Used to answer a rejected request with its id.
pub fn peek_request_id(body: &[u8]) -> Option<u64> {
    fn read<const N: usize>(body: &[u8], position: usize) -> Option<[u8; N]> {
        body.get(position..position.checked_add(N)?)?
            .try_into()
            .ok()
    }
    let root = u32::from_le_bytes(read::<4>(body, 0)?) as usize;
    let vtable_offset = i32::from_le_bytes(read::<4>(body, root)?);
    // A table's vtable lies at `table - soffset`.
    let vtable = i64::try_from(root)
        .ok()?
        .checked_sub(i64::from(vtable_offset))?;
    let vtable = usize::try_from(vtable).ok()?;
    let vtable_bytes = u16::from_le_bytes(read::<2>(body, vtable)?) as usize;
    let field_slot = fb::RequestEnvelope::VT_REQUEST_ID as usize;
    if field_slot + 2 > vtable_bytes {
        return Some(0);
    }
    let field_offset = u16::from_le_bytes(read::<2>(body, vtable.checked_add(field_slot)?)?);
    if field_offset == 0 {
        return Some(0);
    }
    let position = root.checked_add(field_offset as usize)?;
    Some(u64::from_le_bytes(read::<8>(body, position)?))
}

#[cfg(test)]
mod tests;
