//! Codec tests: exact round trips of every message, rejection of invalid
//! messages, and robustness against arbitrary bytes.

use super::*;
use crate::frame::{Frame, FrameDecoder, FRAME_HEADER_BYTES};
use crate::message::{Gpid, ScanRequest, SCAN_CONTEXT_COMPLETE};

/// One balancer request of every kind, each move with a distinct gpid.
fn every_balancer_request() -> Vec<BalancerRequest> {
    vec![
        BalancerRequest::GetLevel,
        BalancerRequest::SetLevel {
            level: "lively".to_string(),
        },
        BalancerRequest::SetLevel {
            level: String::new(),
        },
        BalancerRequest::Balance { apply: false },
        BalancerRequest::Balance { apply: true },
        BalancerRequest::Propose(ProposedMove::MovePrimary {
            gpid: Gpid {
                app_id: 2,
                partition_index: 5,
            },
            to: "127.0.0.1:34901".to_string(),
        }),
        BalancerRequest::Propose(ProposedMove::CopyReplica {
            gpid: Gpid {
                app_id: i32::MAX,
                partition_index: i32::MIN,
            },
            from: "127.0.0.1:34801".to_string(),
            to: "[::1]:35001".to_string(),
        }),
        BalancerRequest::Propose(ProposedMove::CopyReplica {
            gpid: Gpid::default(),
            from: String::new(),
            to: String::new(),
        }),
        BalancerRequest::Propose(ProposedMove::RemoveReplica {
            gpid: Gpid {
                app_id: 7,
                partition_index: 0,
            },
            node: "127.0.0.1:35101".to_string(),
        }),
        BalancerRequest::ListMoves,
        BalancerRequest::RemoveNode {
            node: "127.0.0.1:34801".to_string(),
            cancel: false,
        },
        BalancerRequest::RemoveNode {
            node: "127.0.0.1:34801".to_string(),
            cancel: true,
        },
    ]
}

/// One backup request of every kind, with empty and extreme values.
fn every_backup_request() -> Vec<BackupRequest> {
    vec![
        BackupRequest::Start {
            table: "temp".to_string(),
            url: "s3://bucket/backups?endpoint=http://127.0.0.1:9000".to_string(),
        },
        BackupRequest::Start {
            table: String::new(),
            url: String::new(),
        },
        BackupRequest::List {
            table: "temp".to_string(),
        },
        BackupRequest::List {
            table: String::new(),
        },
        BackupRequest::Query { backup_id: 0 },
        BackupRequest::Query {
            backup_id: u64::MAX,
        },
        BackupRequest::Restore {
            url: "file:///var/backups".to_string(),
            backup_id: 1_763_000_000_123,
            table: "temp".to_string(),
            new_table: "temp_restored".to_string(),
        },
        BackupRequest::Restore {
            url: String::new(),
            backup_id: u64::MAX,
            table: String::new(),
            new_table: String::new(),
        },
        BackupRequest::QueryRestore {
            table: "temp_restored".to_string(),
        },
        BackupRequest::CancelRestore {
            table: "temp_restored".to_string(),
        },
        BackupRequest::AddPolicy(BackupPolicySpec {
            name: "daily".to_string(),
            tables: vec!["temp".to_string(), "usertable".to_string()],
            url: "s3://bucket/backups?endpoint=http://127.0.0.1:9000".to_string(),
            interval_seconds: 86_400,
            start_time: "01:30".to_string(),
            keep: 7,
        }),
        BackupRequest::AddPolicy(BackupPolicySpec::default()),
        BackupRequest::ListPolicies,
        BackupRequest::QueryPolicy {
            name: "daily".to_string(),
        },
        BackupRequest::ModifyPolicy(BackupPolicyChange {
            name: "daily".to_string(),
            add_tables: vec!["t3".to_string()],
            remove_tables: vec!["temp".to_string()],
            interval_seconds: u64::MAX,
            start_time: "23:59".to_string(),
            keep: u32::MAX,
        }),
        BackupRequest::ModifyPolicy(BackupPolicyChange::default()),
        BackupRequest::EnablePolicy {
            name: "daily".to_string(),
        },
        BackupRequest::DisablePolicy {
            name: String::new(),
        },
    ]
}

/// Two backup reports of a beacon: `state` with every field set, then
/// `other` with extreme numbers and empty strings.
fn sample_backup_reports(state: BackupJobState, other: BackupJobState) -> Vec<BackupReport> {
    vec![
        BackupReport {
            backup_id: 1_763_000_000_123,
            gpid: Gpid {
                app_id: 1,
                partition_index: 3,
            },
            ballot: 4,
            state,
            decree: 1_000,
            bytes_done: 4096,
            bytes_total: 1 << 20,
            prefix: "backups/1763000000123/1/3/attempt-2".to_string(),
            message: "upload of 000012.sst failed: connection reset".to_string(),
            restore: false,
        },
        BackupReport {
            backup_id: u64::MAX,
            gpid: Gpid {
                app_id: i32::MAX,
                partition_index: i32::MIN,
            },
            ballot: i64::MIN,
            state: other,
            decree: i64::MAX,
            bytes_done: u64::MAX,
            bytes_total: 0,
            prefix: String::new(),
            message: String::new(),
            restore: true,
        },
    ]
}

/// Two backup orders of a beacon ack: every field set, then extreme
/// numbers and empty strings.
fn sample_backup_orders() -> Vec<BackupOrder> {
    vec![
        BackupOrder {
            backup_id: 1_763_000_000_123,
            gpid: Gpid {
                app_id: 1,
                partition_index: 7,
            },
            ballot: 2,
            url: "file:///var/backups/markab".to_string(),
            prefix: "backups/1763000000123/1/7".to_string(),
        },
        BackupOrder {
            backup_id: 0,
            gpid: Gpid {
                app_id: i32::MIN,
                partition_index: i32::MAX,
            },
            ballot: i64::MAX,
            url: String::new(),
            prefix: String::new(),
        },
    ]
}

fn sample_restore_orders() -> Vec<RestoreOrder> {
    vec![
        RestoreOrder {
            backup_id: 1_763_000_000_123,
            gpid: Gpid {
                app_id: 5,
                partition_index: 2,
            },
            shard: 1,
            table: "temp_restored".to_string(),
            partition_count: 8,
            url: "file:///var/backups/markab".to_string(),
            prefix: "1763000000123/temp_1/2/b3-127.0.0.1-34801".to_string(),
            decree: 12_345,
        },
        RestoreOrder::default(),
    ]
}

/// Env-like string pairs: empty strings, UTF-8, a duplicate key (order kept).
/// Two duplication reports: one healthy with ordinary numbers, one failed
/// with extreme ones.
fn sample_dup_reports() -> Vec<DupReport> {
    vec![
        DupReport {
            dup_id: 1_763_000_000_123,
            gpid: Gpid {
                app_id: 1,
                partition_index: 3,
            },
            confirmed_decree: 41,
            committed_decree: 45,
            lag_ms: 1_200,
            shipped_records: 40,
            shipped_bytes: 4_096,
            errors: 1,
            failed: false,
            message: "remote meta 10.0.0.9:34601 unreachable".to_string(),
        },
        DupReport {
            dup_id: u64::MAX,
            gpid: Gpid {
                app_id: i32::MIN,
                partition_index: i32::MAX,
            },
            confirmed_decree: -1,
            committed_decree: i64::MAX,
            lag_ms: u64::MAX,
            shipped_records: u64::MAX,
            shipped_bytes: 0,
            errors: u64::MAX,
            failed: true,
            message: "decree 7 is no longer in the log".to_string(),
        },
    ]
}

/// Two duplication orders: running from a decree, and paused before any.
fn sample_dup_orders() -> Vec<DupOrder> {
    vec![
        DupOrder {
            dup_id: 1_763_000_000_123,
            gpid: Gpid {
                app_id: 1,
                partition_index: 3,
            },
            remote_metas: vec!["10.0.0.9:34601".to_string(), "10.0.0.10:34601".to_string()],
            remote_table: "temp_copy".to_string(),
            remote_cluster_id: 2,
            status: DupStatus::Running,
            confirmed_decree: 41,
        },
        DupOrder {
            dup_id: 0,
            gpid: Gpid {
                app_id: i32::MAX,
                partition_index: -1,
            },
            remote_metas: Vec::new(),
            remote_table: String::new(),
            remote_cluster_id: u8::MAX,
            status: DupStatus::Paused,
            confirmed_decree: -1,
        },
    ]
}

/// One duplication request of every kind.
fn every_dup_request() -> Vec<DupRequest> {
    vec![
        DupRequest::Add {
            table: "temp".to_string(),
            remote_metas: vec!["10.0.0.9:34601".to_string(), "10.0.0.10:34601".to_string()],
            remote_table: "temp_copy".to_string(),
        },
        DupRequest::Add {
            table: String::new(),
            remote_metas: Vec::new(),
            remote_table: String::new(),
        },
        DupRequest::List {
            table: "temp".to_string(),
        },
        DupRequest::List {
            table: String::new(),
        },
        DupRequest::Pause { id: 1 },
        DupRequest::Start { id: u64::MAX },
        DupRequest::Remove { id: 0 },
    ]
}

/// Duplicate writes: mutations with binary payloads, and none at all.
fn sample_duplicate_requests() -> Vec<DuplicateRequest> {
    vec![
        DuplicateRequest {
            source_cluster_id: 1,
            dup_id: 1_763_000_000_123,
            mutations: vec![
                DupMutation {
                    decree: 42,
                    payload: binary(7, 300),
                },
                DupMutation {
                    decree: 43,
                    payload: vec![0xFF; 5],
                },
                DupMutation::default(),
            ],
        },
        DuplicateRequest {
            source_cluster_id: u8::MAX,
            dup_id: u64::MAX,
            mutations: Vec::new(),
        },
    ]
}

fn sample_pairs() -> Vec<(String, String)> {
    vec![
        (
            "rocksdb.usage_scenario".to_string(),
            "bulk_load".to_string(),
        ),
        (String::new(), String::new()),
        ("ключ".to_string(), "значение ✓".to_string()),
        ("dup".to_string(), "first".to_string()),
        ("dup".to_string(), "second".to_string()),
    ]
}

fn sample_table_info(app_id: i32, status: TableStatus) -> TableInfo {
    TableInfo {
        app_id,
        name: format!("table.{app_id}-x_y"),
        status,
        partition_count: 65536,
        replica_count: 3,
        envs: sample_pairs(),
        create_time_s: 1_700_000_000,
        drop_time_s: if status == TableStatus::Dropped {
            1_700_000_500
        } else {
            0
        },
        drop_expire_s: if status == TableStatus::Dropped {
            u64::MAX
        } else {
            0
        },
    }
}

/// Bytes that exercise the edges: empty, a zero byte, 0xFF runs, non-UTF-8.
fn binary(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| match index % 4 {
            0 => 0xFF,
            1 => 0x00,
            2 => seed,
            _ => (index as u8).wrapping_mul(31),
        })
        .collect()
}

fn sample_envelope(request_id: u64) -> Envelope {
    Envelope {
        request_id,
        timeout_ms: u32::MAX,
        gpid: Gpid {
            app_id: i32::MAX,
            partition_index: -1,
        },
        partition_hash: 0xae8b_1486_0a79_9888,
        partition_count: 0,
    }
}

/// Encodes through a whole frame and back through a FrameDecoder.
fn frame_body(bytes: &[u8], kind: MessageKind) -> Vec<u8> {
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    decoder.extend(bytes);
    let Frame {
        kind: decoded_kind,
        body,
    } = decoder.next_frame().unwrap().unwrap();
    assert_eq!(decoded_kind, kind);
    assert_eq!(decoder.next_frame().unwrap(), None);
    body
}

fn round_trip_request(encoder: &mut Encoder, envelope: &Envelope, request: &Request) {
    let mut out = Vec::new();
    encoder.request_frame(envelope, request, &mut out).unwrap();
    let body = frame_body(&out, MessageKind::Request);
    let (decoded_envelope, decoded) = decode_request(&body).unwrap();
    assert_eq!(&decoded_envelope, envelope, "{}", request.name());
    assert_eq!(&decoded, request);
    assert_eq!(peek_request_id(&body), Some(envelope.request_id));
}

fn round_trip_response(encoder: &mut Encoder, request_id: u64, response: &Response) {
    let mut out = Vec::new();
    encoder
        .response_frame(request_id, response, &mut out)
        .unwrap();
    let body = frame_body(&out, MessageKind::Response);
    let (decoded_id, decoded) = decode_response(&body).unwrap();
    assert_eq!(decoded_id, request_id);
    assert_eq!(&decoded, response);
}

fn filters() -> Vec<Filter> {
    vec![
        Filter::none(),
        Filter::new(FilterType::NoFilter, binary(1, 3)),
        Filter::new(FilterType::MatchAnywhere, b"mid".to_vec()),
        Filter::new(FilterType::MatchPrefix, vec![0xFF, 0xFF]),
        Filter::new(FilterType::MatchPostfix, Vec::new()),
    ]
}

/// One request of every variant, with non-trivial contents.
fn every_request() -> Vec<Request> {
    let empty_key = Key::new(Vec::new(), Vec::new());
    let binary_key = Key::new(binary(7, 9), binary(8, 300));
    let mut multi_get = MultiGetRequest::range(binary(2, 5));
    multi_get.sort_keys = vec![Vec::new(), binary(3, 4), vec![0xFF; 16]];
    multi_get.max_kv_count = -1;
    multi_get.max_kv_size = i32::MAX;
    multi_get.no_value = true;
    multi_get.start_sort_key = b"a".to_vec();
    multi_get.stop_sort_key = vec![0xFF];
    multi_get.start_inclusive = false;
    multi_get.stop_inclusive = true;
    multi_get.sort_key_filter = Filter::new(FilterType::MatchPrefix, b"p".to_vec());
    multi_get.reverse = true;
    vec![
        Request::Get(empty_key.clone()),
        Request::Get(binary_key.clone()),
        Request::Set {
            key: binary_key.clone(),
            value: binary(9, 1000),
            ttl_seconds: u32::MAX,
        },
        Request::Set {
            key: empty_key.clone(),
            value: Vec::new(),
            ttl_seconds: 0,
        },
        Request::Del(binary_key.clone()),
        Request::Exist(Key::new(b"h".to_vec(), Vec::new())),
        Request::Ttl(Key::new(Vec::new(), b"s".to_vec())),
        Request::MultiGet(multi_get),
        Request::MultiGet(MultiGetRequest::range(Vec::new())),
        Request::MultiSet {
            hash_key: binary(4, 10),
            kvs: vec![
                SortKeyValue {
                    sort_key: Vec::new(),
                    value: binary(5, 20),
                },
                SortKeyValue {
                    sort_key: vec![0xFF],
                    value: Vec::new(),
                },
            ],
            ttl_seconds: 3600,
        },
        Request::MultiDel {
            hash_key: b"h".to_vec(),
            sort_keys: vec![Vec::new(), vec![0x00], vec![0xFF; 3]],
        },
        Request::MultiDel {
            hash_key: Vec::new(),
            sort_keys: Vec::new(),
        },
        Request::SortKeyCount {
            hash_key: vec![0xFF; 8],
        },
        Request::Incr {
            key: binary_key.clone(),
            increment: i64::MIN,
            ttl_seconds: -1,
        },
        Request::Incr {
            key: empty_key,
            increment: i64::MAX,
            ttl_seconds: i32::MAX,
        },
        Request::CheckAndSet(CheckAndSetRequest {
            hash_key: binary(11, 7),
            check_sort_key: Vec::new(),
            check_type: CheckType::ValueBytesLessOrEqual,
            check_operand: vec![0xFF; 4],
            set_sort_key: b"s".to_vec(),
            set_value: binary(12, 200),
            set_ttl_seconds: 86_400,
            return_check_value: true,
        }),
        Request::CheckAndMutate(CheckAndMutateRequest {
            hash_key: b"h".to_vec(),
            check_sort_key: Vec::new(),
            check_type: CheckType::ValueIntGreater,
            check_operand: b"-12".to_vec(),
            mutations: vec![
                Mutation::Put {
                    sort_key: b"a".to_vec(),
                    value: binary(6, 50),
                    ttl_seconds: 10,
                },
                Mutation::Delete {
                    sort_key: Vec::new(),
                },
                Mutation::Put {
                    sort_key: vec![0xFF],
                    value: Vec::new(),
                    ttl_seconds: 0,
                },
            ],
            return_check_value: true,
        }),
        Request::CheckAndMutate(CheckAndMutateRequest {
            hash_key: Vec::new(),
            check_sort_key: Vec::new(),
            check_type: CheckType::NoCheck,
            check_operand: Vec::new(),
            mutations: Vec::new(),
            return_check_value: false,
        }),
        Request::BatchGet {
            keys: vec![
                binary_key.clone(),
                Key::new(Vec::new(), Vec::new()),
                Key::new(vec![0xFF], vec![0x00]),
            ],
        },
        Request::BatchGet { keys: Vec::new() },
        Request::GetScanner(ScanRequest {
            range: ScanRange::Hash {
                hash_key: binary(10, 6),
                start_sort_key: Vec::new(),
                stop_sort_key: vec![0xFF; 2],
            },
            start_inclusive: false,
            stop_inclusive: true,
            hash_key_filter: Filter::new(FilterType::MatchAnywhere, b"x".to_vec()),
            sort_key_filter: Filter::new(FilterType::MatchPostfix, vec![0x00]),
            batch_size: -5,
            no_value: true,
            only_return_count: true,
        }),
        Request::GetScanner(ScanRequest::new(ScanRange::Full)),
        Request::Scan { context_id: 42 },
        Request::Scan {
            context_id: SCAN_CONTEXT_COMPLETE,
        },
        Request::ClearScanner {
            context_id: i64::MAX,
        },
        Request::QueryRoute {
            table: "temp_table-ü".to_string(),
        },
        Request::QueryRoute {
            table: String::new(),
        },
        Request::CreateTable(CreateTableRequest {
            table: "users.v2".to_string(),
            partition_count: 65536,
            replica_count: 5,
            envs: sample_pairs(),
            success_if_exist: true,
        }),
        Request::CreateTable(CreateTableRequest {
            table: String::new(),
            partition_count: -3,
            replica_count: 0,
            envs: Vec::new(),
            success_if_exist: false,
        }),
        Request::DropTable {
            table: "users".to_string(),
            reserve_seconds: None,
        },
        Request::DropTable {
            table: "users".to_string(),
            reserve_seconds: Some(0),
        },
        Request::DropTable {
            table: String::new(),
            reserve_seconds: Some(u32::MAX),
        },
        Request::RecallTable {
            app_id: i32::MAX,
            new_name: "users_back".to_string(),
        },
        Request::RecallTable {
            app_id: -1,
            new_name: String::new(),
        },
        Request::ListTables {
            include_dropped: true,
        },
        Request::ListTables {
            include_dropped: false,
        },
        Request::DescribeTable {
            table: "temp".to_string(),
        },
        Request::ListNodes,
        Request::ClusterInfo,
        Request::SetAppEnvs {
            table: "temp".to_string(),
            envs: sample_pairs(),
        },
        Request::SetAppEnvs {
            table: "temp".to_string(),
            envs: Vec::new(),
        },
        Request::GetAppEnvs {
            table: "temp".to_string(),
        },
        Request::Beacon(NodeBeacon {
            node: "127.0.0.1:34801".to_string(),
            shard_addresses: vec![
                "127.0.0.1:34801".to_string(),
                "127.0.0.1:34802".to_string(),
                String::new(),
            ],
            replicas: vec![
                HostedReplica {
                    gpid: Gpid {
                        app_id: 1,
                        partition_index: 0,
                    },
                    shard: 2,
                    ballot: 1,
                    decree_applied: 0,
                    role: ReplicaRole::Secondary,
                    decree_prepared: 7,
                    decree_committed: 5,
                },
                HostedReplica {
                    gpid: Gpid {
                        app_id: i32::MAX,
                        partition_index: 65535,
                    },
                    shard: -1,
                    ballot: i64::MAX,
                    decree_applied: i64::MIN,
                    role: ReplicaRole::Inactive,
                    decree_prepared: i64::MAX,
                    decree_committed: i64::MIN,
                },
                HostedReplica {
                    gpid: Gpid {
                        app_id: 3,
                        partition_index: 1,
                    },
                    shard: 0,
                    ballot: 4,
                    decree_applied: 9,
                    role: ReplicaRole::Learner,
                    decree_prepared: 9,
                    decree_committed: 9,
                },
            ],
            incarnation: 1_763_000_000_000_000_000,
            backups: sample_backup_reports(BackupJobState::Running, BackupJobState::Failed),
            splits: vec![
                SplitReport {
                    gpid: Gpid {
                        app_id: 1,
                        partition_index: 0,
                    },
                    epoch: 3,
                    ballot: 2,
                    fence_decree: 0,
                    fenced: true,
                    copied_decree: 0,
                    copied: true,
                    message: String::new(),
                },
                SplitReport {
                    gpid: Gpid {
                        app_id: i32::MIN,
                        partition_index: i32::MAX,
                    },
                    epoch: u64::MAX,
                    ballot: i64::MIN,
                    fence_decree: i64::MAX,
                    fenced: false,
                    copied_decree: i64::MIN,
                    copied: false,
                    message: "no space left on device".to_string(),
                },
            ],
            dups: sample_dup_reports(),
        }),
        Request::Beacon(NodeBeacon {
            node: "127.0.0.1:34901".to_string(),
            backups: sample_backup_reports(BackupJobState::Done, BackupJobState::Running),
            ..NodeBeacon::default()
        }),
        Request::Beacon(NodeBeacon::default()),
        Request::RemoveSecondary {
            gpid: Gpid {
                app_id: 1,
                partition_index: 3,
            },
            ballot: 4,
            node: "127.0.0.1:34901".to_string(),
        },
        Request::RemoveSecondary {
            gpid: Gpid {
                app_id: i32::MIN,
                partition_index: i32::MAX,
            },
            ballot: i64::MIN,
            node: String::new(),
        },
        Request::UpgradeLearner {
            gpid: Gpid {
                app_id: 2,
                partition_index: 0,
            },
            ballot: 9,
            node: "127.0.0.1:35001".to_string(),
        },
        Request::SwitchPrimary {
            gpid: Gpid {
                app_id: 4,
                partition_index: 6,
            },
            ballot: 12,
            node: "127.0.0.1:35101".to_string(),
        },
        Request::SwitchPrimary {
            gpid: Gpid {
                app_id: i32::MIN,
                partition_index: i32::MAX,
            },
            ballot: i64::MAX,
            node: String::new(),
        },
        Request::Peer(PeerRequest {
            kind: PeerKind::Prepare,
            from: "127.0.0.1:34801".to_string(),
            from_address: "127.0.0.1:34802".to_string(),
            ballot: 3,
            decree: 17,
            committed_decree: 16,
            error: 0,
            error_value: 0,
            flag: false,
            mutations: vec![
                PeerMutation {
                    ballot: 3,
                    decree: 17,
                    committed_decree: 15,
                    payload: b"batch\0bytes".to_vec(),
                },
                PeerMutation::default(),
            ],
            data: Vec::new(),
            name: String::new(),
        }),
        Request::Peer(PeerRequest {
            kind: PeerKind::CheckpointChunk,
            from: String::new(),
            from_address: String::new(),
            ballot: u64::MAX,
            decree: u64::MAX,
            committed_decree: 0,
            error: 255,
            error_value: u64::MAX,
            flag: true,
            mutations: Vec::new(),
            data: vec![0, 1, 2, 255],
            name: "000012.sst".to_string(),
        }),
        Request::Peer(PeerRequest {
            kind: PeerKind::PrepareAck,
            ..PeerRequest::default()
        }),
        Request::Peer(PeerRequest {
            kind: PeerKind::LearnRequest,
            ..PeerRequest::default()
        }),
        Request::Peer(PeerRequest {
            kind: PeerKind::LearnResponse,
            ..PeerRequest::default()
        }),
    ]
    .into_iter()
    .chain(every_balancer_request().into_iter().map(Request::Balancer))
    .chain(every_backup_request().into_iter().map(Request::Backup))
    .chain(
        [
            SplitRequest::Start {
                table: "temp".to_string(),
                new_count: 16,
            },
            SplitRequest::Start {
                table: String::new(),
                new_count: i32::MIN,
            },
            SplitRequest::Query {
                table: "temp".to_string(),
            },
            SplitRequest::Pause {
                table: "temp".to_string(),
            },
            SplitRequest::Restart {
                table: "temp".to_string(),
            },
            SplitRequest::Cancel {
                table: "temp".to_string(),
            },
        ]
        .into_iter()
        .map(Request::PartitionSplit),
    )
    .chain(every_dup_request().into_iter().map(Request::Dup))
    .chain(
        sample_duplicate_requests()
            .into_iter()
            .map(Request::Duplicate),
    )
    .collect()
}

/// One response of every body variant plus one error per error code.
fn every_response() -> Vec<Response> {
    let records = vec![
        Record {
            hash_key: binary(1, 4),
            sort_key: Vec::new(),
            value: binary(2, 100),
        },
        Record {
            hash_key: Vec::new(),
            sort_key: vec![0xFF],
            value: Vec::new(),
        },
    ];
    let mut responses = vec![
        Ok(ResponseBody::Done),
        Ok(ResponseBody::Value(Vec::new())),
        Ok(ResponseBody::Value(binary(3, 5000))),
        Ok(ResponseBody::Exist(true)),
        Ok(ResponseBody::Exist(false)),
        Ok(ResponseBody::Ttl(-1)),
        Ok(ResponseBody::Ttl(i32::MAX)),
        Ok(ResponseBody::MultiGet {
            kvs: vec![
                SortKeyValue {
                    sort_key: Vec::new(),
                    value: vec![0xFF; 3],
                },
                SortKeyValue {
                    sort_key: b"b".to_vec(),
                    value: Vec::new(),
                },
            ],
            incomplete: true,
        }),
        Ok(ResponseBody::MultiGet {
            kvs: Vec::new(),
            incomplete: false,
        }),
        Ok(ResponseBody::Count(i64::MIN)),
        Ok(ResponseBody::Incr(-7)),
        Ok(ResponseBody::CheckAndSet(CheckAndSetResult {
            set_succeeded: false,
            check_value_returned: true,
            check_value_exist: true,
            check_value: binary(4, 9),
        })),
        Ok(ResponseBody::CheckAndSet(CheckAndSetResult::default())),
        Ok(ResponseBody::BatchGet(records.clone())),
        Ok(ResponseBody::BatchGet(Vec::new())),
        Ok(ResponseBody::Scan {
            records,
            count: 2,
            context_id: 9,
        }),
        Ok(ResponseBody::Scan {
            records: Vec::new(),
            count: 0,
            context_id: SCAN_CONTEXT_COMPLETE,
        }),
        Ok(ResponseBody::Route(Route {
            table: "users".to_string(),
            app_id: 3,
            partition_count: 2,
            partitions: vec![
                PartitionRoute {
                    partition_index: 0,
                    address: "127.0.0.1:34801".to_string(),
                    ballot: 1,
                },
                PartitionRoute {
                    partition_index: 1,
                    address: String::new(),
                    ballot: i64::MAX,
                },
            ],
        })),
        Ok(ResponseBody::Route(Route {
            table: String::new(),
            app_id: 0,
            partition_count: 0,
            partitions: Vec::new(),
        })),
        Ok(ResponseBody::Table(sample_table_info(
            7,
            TableStatus::Available,
        ))),
        Ok(ResponseBody::Table(TableInfo::default())),
        Ok(ResponseBody::Tables(vec![
            sample_table_info(1, TableStatus::Available),
            sample_table_info(2, TableStatus::Dropped),
            TableInfo::default(),
        ])),
        Ok(ResponseBody::Tables(Vec::new())),
        Ok(ResponseBody::Description(TableDescription {
            info: sample_table_info(3, TableStatus::Available),
            partitions: vec![
                PartitionConfig {
                    partition_index: 0,
                    ballot: 1,
                    primary: "127.0.0.1:34801".to_string(),
                    secondaries: Vec::new(),
                    learners: vec!["127.0.0.1:34901".to_string()],
                },
                PartitionConfig {
                    partition_index: 1,
                    ballot: i64::MAX,
                    primary: String::new(),
                    secondaries: vec!["127.0.0.1:34811".to_string(), "127.0.0.1:34821".to_string()],
                    learners: Vec::new(),
                },
            ],
        })),
        Ok(ResponseBody::Description(TableDescription::default())),
        Ok(ResponseBody::Nodes(vec![
            NodeInfo {
                node: "127.0.0.1:34801".to_string(),
                shard_addresses: vec!["127.0.0.1:34801".to_string(), "127.0.0.1:34802".to_string()],
                alive: true,
                replica_count: 12,
                last_beacon_ms_ago: 999,
                primary_count: 5,
                shard_replica_counts: vec![7, 5],
                shard_primary_counts: vec![3, 2],
                removing: false,
            },
            NodeInfo {
                node: "[::1]:34901".to_string(),
                shard_addresses: Vec::new(),
                alive: false,
                replica_count: 0,
                last_beacon_ms_ago: u64::MAX,
                primary_count: 0,
                shard_replica_counts: Vec::new(),
                shard_primary_counts: Vec::new(),
                removing: true,
            },
            NodeInfo {
                node: "127.0.0.1:35001".to_string(),
                shard_addresses: vec!["127.0.0.1:35001".to_string(); 3],
                alive: true,
                replica_count: i32::MAX,
                last_beacon_ms_ago: 0,
                primary_count: i32::MIN,
                shard_replica_counts: vec![i32::MAX, 0, -1],
                shard_primary_counts: vec![i32::MIN, 0, 1],
                removing: true,
            },
        ])),
        Ok(ResponseBody::Nodes(Vec::new())),
        Ok(ResponseBody::Pairs(sample_pairs())),
        Ok(ResponseBody::Pairs(Vec::new())),
        Ok(ResponseBody::BeaconAck(BeaconAck {
            assignments: vec![
                ReplicaAssignment {
                    table: "temp".to_string(),
                    app_id: 1,
                    partition_index: 7,
                    partition_count: 8,
                    shard: 3,
                    ballot: 1,
                    primary: "127.0.0.1:34801".to_string(),
                    secondaries: vec!["127.0.0.1:34901".to_string(), "127.0.0.1:35001".to_string()],
                    member_addresses: vec![
                        "127.0.0.1:34804".to_string(),
                        "127.0.0.1:34901".to_string(),
                        "127.0.0.1:35002".to_string(),
                        "127.0.0.1:35101".to_string(),
                    ],
                    learners: vec!["127.0.0.1:35101".to_string()],
                    replica_count: 4,
                    handoff_to: "127.0.0.1:34901".to_string(),
                    split_child: true,
                },
                ReplicaAssignment {
                    table: String::new(),
                    app_id: i32::MIN,
                    partition_index: -1,
                    partition_count: 0,
                    shard: i32::MAX,
                    ballot: i64::MIN,
                    primary: String::new(),
                    secondaries: Vec::new(),
                    member_addresses: Vec::new(),
                    learners: Vec::new(),
                    replica_count: i32::MIN,
                    handoff_to: String::new(),
                    split_child: false,
                },
            ],
            drops: vec![
                Gpid {
                    app_id: 2,
                    partition_index: 0,
                },
                Gpid {
                    app_id: i32::MAX,
                    partition_index: i32::MIN,
                },
            ],
            lease_ms: 600,
            replica_count_min_alive: 2,
            beacon_again_ms: 10,
            backups: sample_backup_orders(),
            restores: sample_restore_orders(),
            splits: vec![
                SplitOrder {
                    gpid: Gpid {
                        app_id: 1,
                        partition_index: 3,
                    },
                    new_count: 16,
                    epoch: 7,
                    fence_decree: 0,
                    fenced: true,
                },
                SplitOrder {
                    gpid: Gpid {
                        app_id: i32::MAX,
                        partition_index: -1,
                    },
                    new_count: i32::MIN,
                    epoch: u64::MAX,
                    fence_decree: i64::MIN,
                    fenced: false,
                },
            ],
            dups: sample_dup_orders(),
            cluster_id: 1,
        })),
        Ok(ResponseBody::BeaconAck(BeaconAck {
            assignments: Vec::new(),
            drops: Vec::new(),
            lease_ms: u64::MAX,
            replica_count_min_alive: i32::MIN,
            beacon_again_ms: u32::MAX,
            backups: Vec::new(),
            restores: Vec::new(),
            splits: Vec::new(),
            dups: Vec::new(),
            cluster_id: u8::MAX,
        })),
        Ok(ResponseBody::BeaconAck(BeaconAck::default())),
    ];
    for code in ErrorCode::ALL {
        if code != ErrorCode::Ok {
            responses.push(Err(OpError::new(code, format!("{code} happened"))));
        }
    }
    responses.push(Err(OpError::new(ErrorCode::NotFound, "")));
    responses
}

#[test]
fn every_request_variant_round_trips() {
    // Proves each Request variant (empty, binary and 0xFF keys, extreme numbers) decodes to exactly what was encoded.
    let requests = every_request();
    let mut names: Vec<&str> = requests.iter().map(Request::name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 36, "every variant is covered");
    let mut encoder = Encoder::new();
    for (index, request) in requests.iter().enumerate() {
        round_trip_request(&mut encoder, &sample_envelope(index as u64), request);
    }
    round_trip_request(&mut encoder, &Envelope::default(), &requests[0]);
}

#[test]
fn check_and_set_round_trips_every_check_type() {
    // Proves all 18 check types survive the wire in check_and_set and check_and_mutate.
    let mut encoder = Encoder::new();
    for (index, check_type) in CheckType::ALL.into_iter().enumerate() {
        let request = Request::CheckAndSet(CheckAndSetRequest {
            hash_key: binary(index as u8, index),
            check_sort_key: vec![0xFF; index],
            check_type,
            check_operand: binary(1, 3),
            set_sort_key: Vec::new(),
            set_value: binary(2, 64),
            set_ttl_seconds: index as u32,
            return_check_value: index % 2 == 0,
        });
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &request);
        let request = Request::CheckAndMutate(CheckAndMutateRequest {
            hash_key: b"h".to_vec(),
            check_sort_key: b"c".to_vec(),
            check_type,
            check_operand: Vec::new(),
            mutations: vec![Mutation::Delete {
                sort_key: b"c".to_vec(),
            }],
            return_check_value: index % 2 == 1,
        });
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &request);
    }
}

#[test]
fn every_filter_type_round_trips_in_multi_get_and_scans() {
    // Proves every filter type, with and without a pattern, decodes unchanged in both filter slots.
    let mut encoder = Encoder::new();
    for filter in filters() {
        let mut multi_get = MultiGetRequest::range(b"h".to_vec());
        multi_get.sort_key_filter = filter.clone();
        round_trip_request(
            &mut encoder,
            &sample_envelope(1),
            &Request::MultiGet(multi_get),
        );
        let mut scan = ScanRequest::new(ScanRange::Full);
        scan.hash_key_filter = filter.clone();
        scan.sort_key_filter = filter;
        round_trip_request(
            &mut encoder,
            &sample_envelope(2),
            &Request::GetScanner(scan),
        );
    }
}

#[test]
fn every_response_variant_and_error_round_trips() {
    // Proves each ResponseBody variant and an error of every code decode to exactly what was encoded.
    let mut encoder = Encoder::new();
    for (index, response) in every_response().iter().enumerate() {
        round_trip_response(&mut encoder, u64::MAX - index as u64, response);
    }
}

#[test]
fn every_response_body_variant_is_sampled() {
    // Proves the round-trip samples hold all 17 ResponseBody variants, so a new variant cannot go untested.
    let mut distinct: Vec<std::mem::Discriminant<ResponseBody>> = Vec::new();
    for body in every_response()
        .iter()
        .filter_map(|response| response.as_ref().ok())
    {
        let kind = std::mem::discriminant(body);
        if !distinct.contains(&kind) {
            distinct.push(kind);
        }
    }
    assert_eq!(distinct.len(), 17);
}

#[test]
fn meta_error_codes_travel_with_their_schema_numbers() {
    // Proves TABLE_EXISTS, NOT_ENOUGH_NODES, NOT_HOSTED and STALE_BALLOT use wire values 16..=19 in both enums and round-trip as errors.
    let expected = [
        (ErrorCode::TableExists, 16, "TableExists"),
        (ErrorCode::NotEnoughNodes, 17, "NotEnoughNodes"),
        (ErrorCode::NotHosted, 18, "NotHosted"),
        (ErrorCode::StaleBallot, 19, "StaleBallot"),
    ];
    let mut encoder = Encoder::new();
    for (code, value, schema_name) in expected {
        assert_eq!(code as i16, value);
        assert_eq!(ErrorCode::from_i16(value), Some(code));
        assert_eq!(fb::ErrorCode(value).variant_name(), Some(schema_name));
        round_trip_response(
            &mut encoder,
            value as u64,
            &Err(OpError::new(code, format!("table \"users\": {code}"))),
        );
    }
    // Every code of the Rust enum is named by the schema, and the schema has no extra ones.
    for code in ErrorCode::ALL {
        assert!(
            fb::ErrorCode(code as i16).variant_name().is_some(),
            "{code}"
        );
    }
    assert_eq!(fb::ErrorCode::ENUM_MAX as usize, ErrorCode::ALL.len() - 1);
    assert_eq!(
        fb::TableStatus(TableStatus::Dropped as u8),
        fb::TableStatus::Dropped
    );
    assert_eq!(fb::TableStatus::ENUM_MAX, TableStatus::Dropped as u8);
    for role in [
        ReplicaRole::Primary,
        ReplicaRole::Secondary,
        ReplicaRole::Learner,
        ReplicaRole::Inactive,
    ] {
        assert_eq!(
            fb::ReplicaRole(role as u8).variant_name(),
            Some(format!("{role:?}").as_str())
        );
    }
    assert_eq!(fb::ReplicaRole::ENUM_MAX, ReplicaRole::Inactive as u8);
}

#[test]
fn large_meta_messages_round_trip_within_their_size_estimates() {
    // Proves long lists of wide items with tiny strings (the worst case for per-item overhead) round-trip and stay within the size estimate.
    let item_count = 4096;
    let tables: Vec<TableInfo> = (0..item_count)
        .map(|index| TableInfo {
            app_id: index,
            name: "t".to_string(),
            status: TableStatus::Dropped,
            partition_count: i32::MAX,
            replica_count: i32::MAX,
            envs: vec![(String::new(), "v".to_string())],
            create_time_s: u64::MAX,
            drop_time_s: u64::MAX,
            drop_expire_s: u64::MAX,
        })
        .collect();
    let partitions: Vec<PartitionConfig> = (0..item_count)
        .map(|index| PartitionConfig {
            partition_index: index,
            ballot: -1,
            primary: "p".to_string(),
            secondaries: vec![String::new(), "s".to_string()],
            learners: vec!["l".to_string()],
        })
        .collect();
    let nodes: Vec<NodeInfo> = (0..item_count)
        .map(|index| NodeInfo {
            node: index.to_string(),
            shard_addresses: vec![String::new()],
            alive: true,
            replica_count: -1,
            last_beacon_ms_ago: u64::MAX,
            primary_count: -1,
            shard_replica_counts: vec![-1; 2],
            shard_primary_counts: vec![-1],
            removing: true,
        })
        .collect();
    let assignments: Vec<ReplicaAssignment> = (0..item_count)
        .map(|index| ReplicaAssignment {
            table: String::new(),
            app_id: -1,
            partition_index: index,
            partition_count: -1,
            shard: -1,
            ballot: -1,
            primary: "p".to_string(),
            secondaries: vec![String::new(), "s".to_string()],
            member_addresses: vec!["a".to_string(); 3],
            learners: vec!["l".to_string()],
            replica_count: -1,
            handoff_to: "h".to_string(),
            split_child: true,
        })
        .collect();
    let drops: Vec<Gpid> = (0..item_count)
        .map(|index| Gpid {
            app_id: index,
            partition_index: -index,
        })
        .collect();
    let replicas: Vec<HostedReplica> = (0..item_count)
        .map(|index| HostedReplica {
            gpid: Gpid {
                app_id: -1,
                partition_index: index,
            },
            shard: -1,
            ballot: -1,
            decree_applied: -1,
            role: ReplicaRole::Learner,
            decree_prepared: -1,
            decree_committed: -1,
        })
        .collect();
    let reports: Vec<BackupReport> = (0..item_count)
        .map(|index| BackupReport {
            backup_id: u64::MAX,
            gpid: Gpid {
                app_id: -1,
                partition_index: index,
            },
            ballot: -1,
            state: BackupJobState::Failed,
            decree: -1,
            bytes_done: u64::MAX,
            bytes_total: u64::MAX,
            prefix: "p".to_string(),
            message: String::new(),
            restore: true,
        })
        .collect();
    let orders: Vec<BackupOrder> = (0..item_count)
        .map(|index| BackupOrder {
            backup_id: u64::MAX,
            gpid: Gpid {
                app_id: index,
                partition_index: -1,
            },
            ballot: -1,
            url: "u".to_string(),
            prefix: String::new(),
        })
        .collect();
    let restore_orders: Vec<RestoreOrder> = (0..item_count)
        .map(|index| RestoreOrder {
            backup_id: u64::MAX,
            gpid: Gpid {
                app_id: index,
                partition_index: -1,
            },
            shard: -1,
            table: "t".to_string(),
            partition_count: -1,
            url: "u".to_string(),
            prefix: String::new(),
            decree: -1,
        })
        .collect();
    let responses = [
        Ok(ResponseBody::Tables(tables.clone())),
        Ok(ResponseBody::Description(TableDescription {
            info: tables[0].clone(),
            partitions,
        })),
        Ok(ResponseBody::Nodes(nodes)),
        Ok(ResponseBody::BeaconAck(BeaconAck {
            assignments,
            drops,
            lease_ms: u64::MAX,
            replica_count_min_alive: 3,
            beacon_again_ms: 0,
            backups: orders,
            restores: restore_orders,
            splits: (0..item_count)
                .map(|index| SplitOrder {
                    gpid: Gpid {
                        app_id: -1,
                        partition_index: index,
                    },
                    new_count: -1,
                    epoch: u64::MAX,
                    fence_decree: i64::MIN,
                    fenced: true,
                })
                .collect(),
            dups: (0..item_count)
                .map(|index| DupOrder {
                    dup_id: u64::MAX,
                    gpid: Gpid {
                        app_id: -1,
                        partition_index: index,
                    },
                    remote_metas: vec![String::new(), "m".to_string()],
                    remote_table: String::new(),
                    remote_cluster_id: u8::MAX,
                    status: DupStatus::Paused,
                    confirmed_decree: i64::MIN,
                })
                .collect(),
            cluster_id: 127,
        })),
        Ok(ResponseBody::Pairs(vec![
            (String::new(), String::new());
            4096
        ])),
    ];
    let mut encoder = Encoder::new();
    for response in &responses {
        round_trip_response(&mut encoder, 3, response);
        let mut out = Vec::new();
        encoder.response_frame(3, response, &mut out).unwrap();
        let body_bytes = out.len() - FRAME_HEADER_BYTES;
        assert!(body_bytes <= response_bytes_estimate(response));
    }
    let beacon = Request::Beacon(NodeBeacon {
        node: String::new(),
        shard_addresses: vec![String::new(); 4096],
        replicas,
        incarnation: u64::MAX,
        backups: reports,
        splits: Vec::new(),
        dups: (0..item_count)
            .map(|index| DupReport {
                dup_id: u64::MAX,
                gpid: Gpid {
                    app_id: -1,
                    partition_index: index,
                },
                confirmed_decree: -1,
                committed_decree: -1,
                lag_ms: u64::MAX,
                shipped_records: u64::MAX,
                shipped_bytes: u64::MAX,
                errors: u64::MAX,
                failed: true,
                message: String::new(),
            })
            .collect(),
    });
    let duplicate = Request::Duplicate(DuplicateRequest {
        source_cluster_id: 1,
        dup_id: u64::MAX,
        mutations: (0..item_count)
            .map(|index| DupMutation {
                decree: i64::from(index),
                payload: Vec::new(),
            })
            .collect(),
    });
    for request in [beacon, duplicate] {
        round_trip_request(&mut encoder, &sample_envelope(4), &request);
        let mut out = Vec::new();
        encoder
            .request_frame(&sample_envelope(4), &request, &mut out)
            .unwrap();
        assert!(out.len() - FRAME_HEADER_BYTES <= request_bytes_estimate(&request));
    }
}

#[test]
fn encoder_reuse_does_not_leak_state_between_messages() {
    // Proves interleaving large and small messages on one encoder yields the same bytes as fresh encoders.
    let mut shared = Encoder::new();
    let mut requests = every_request();
    requests.push(Request::Set {
        key: Key::new(b"h".to_vec(), b"s".to_vec()),
        value: vec![0xAB; 3 * ENCODER_BUILDER_BYTES_RETAIN_MAX],
        ttl_seconds: 1,
    });
    requests.extend(every_request());
    for request in &requests {
        let mut from_shared = Vec::new();
        shared
            .request_frame(&sample_envelope(5), request, &mut from_shared)
            .unwrap();
        let mut from_fresh = Vec::new();
        Encoder::new()
            .request_frame(&sample_envelope(5), request, &mut from_fresh)
            .unwrap();
        assert_eq!(from_shared, from_fresh, "{}", request.name());
    }
}

#[test]
fn encoder_drops_a_builder_grown_by_a_huge_message() {
    // Proves the builder is replaced after a message above the retain bound, so its memory is released.
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    let huge = Ok(ResponseBody::Value(
        vec![1; 2 * ENCODER_BUILDER_BYTES_RETAIN_MAX],
    ));
    encoder.response_frame(1, &huge, &mut out).unwrap();
    let builder = std::mem::replace(&mut encoder.builder, FlatBufferBuilder::new());
    let (buffer, _) = builder.collapse();
    assert!(
        buffer.len() <= ENCODER_BUILDER_BYTES_INITIAL,
        "kept {} bytes",
        buffer.len()
    );
}

#[test]
fn frames_append_to_existing_output() {
    // Proves request_frame and response_frame append (pipelining) instead of overwriting.
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    encoder
        .request_frame(
            &sample_envelope(1),
            &Request::Scan { context_id: 1 },
            &mut out,
        )
        .unwrap();
    encoder
        .response_frame(2, &Ok(ResponseBody::Done), &mut out)
        .unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    decoder.extend(&out);
    let first = decoder.next_frame().unwrap().unwrap();
    let second = decoder.next_frame().unwrap().unwrap();
    assert_eq!(
        decode_request(&first.body).unwrap().1,
        Request::Scan { context_id: 1 }
    );
    assert_eq!(
        decode_response(&second.body).unwrap(),
        (2, Ok(ResponseBody::Done))
    );
}

#[test]
fn oversized_messages_are_refused_without_touching_output() {
    // Proves a request or response that cannot fit in a frame fails with TooLarge and leaves `out` as it was.
    let mut encoder = Encoder::new();
    let mut out = b"already queued".to_vec();
    let request = Request::Set {
        key: Key::new(b"h".to_vec(), b"s".to_vec()),
        value: vec![0; FRAME_BODY_BYTES_MAX],
        ttl_seconds: 0,
    };
    let error = encoder
        .request_frame(&sample_envelope(1), &request, &mut out)
        .unwrap_err();
    assert!(
        matches!(error, EncodeError::TooLarge { body_bytes_max, .. } if body_bytes_max == FRAME_BODY_BYTES_MAX)
    );
    let response = Ok(ResponseBody::BatchGet(vec![
        Record::default();
        FRAME_BODY_BYTES_MAX / 32
    ]));
    assert!(matches!(
        encoder.response_frame(1, &response, &mut out),
        Err(EncodeError::TooLarge { .. })
    ));
    assert_eq!(out, b"already queued");
    // The encoder still works afterwards.
    round_trip_request(
        &mut encoder,
        &sample_envelope(3),
        &Request::Scan { context_id: 3 },
    );
}

// ---------------------------------------------------------------------------
// Invalid messages, built directly with the generated builders.

fn finished(builder: &mut FlatBufferBuilder<'static>) -> Vec<u8> {
    builder.finished_data().to_vec()
}

/// A request envelope around a balancer request built from `args`.
fn balancer_body(builder: &mut Builder, args: &fb::BalancerRequestArgs) -> Vec<u8> {
    let table = fb::BalancerRequest::create(builder, args);
    request_with_body(
        fb::RequestBody::BalancerRequest,
        Some(table.as_union_value()),
        builder,
    )
}

fn request_with_body(
    body_type: fb::RequestBody,
    body: Option<Union>,
    builder: &mut Builder,
) -> Vec<u8> {
    let root = fb::RequestEnvelope::create(
        builder,
        &fb::RequestEnvelopeArgs {
            request_id: 77,
            body_type,
            body,
            ..Default::default()
        },
    );
    builder.finish(root, None);
    finished(builder)
}

fn assert_invalid(result: Result<impl std::fmt::Debug, DecodeError>, needle: &str) {
    match result {
        Err(DecodeError::Invalid(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

#[test]
fn request_without_body_is_invalid() {
    // Proves an envelope with no body, or a body type with no table, is rejected as Invalid.
    let mut builder = FlatBufferBuilder::new();
    let body = request_with_body(fb::RequestBody::NONE, None, &mut builder);
    assert_invalid(decode_request(&body), "no body");
    assert_eq!(peek_request_id(&body), Some(77));

    let mut builder = FlatBufferBuilder::new();
    let body = request_with_body(fb::RequestBody::GetRequest, None, &mut builder);
    match decode_request(&body) {
        Err(DecodeError::Invalid(_)) | Err(DecodeError::Verify(_)) => {}
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn unknown_enum_values_in_requests_are_invalid() {
    // Proves unknown body types, check types, filter types, mutation ops and scan kinds are rejected.
    let mut builder = FlatBufferBuilder::new();
    let table = fb::ScanRequest::create(&mut builder, &fb::ScanRequestArgs { context_id: 1 });
    let body = request_with_body(
        fb::RequestBody(200),
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "unknown request body type 200");
    assert_eq!(peek_request_id(&body), Some(77));

    let mut builder = FlatBufferBuilder::new();
    let table = fb::CheckAndSetRequest::create(
        &mut builder,
        &fb::CheckAndSetRequestArgs {
            check_type: fb::CheckType(18),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::CheckAndSetRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "unknown check type 18");

    let mut builder = FlatBufferBuilder::new();
    let filter = fb::Filter::create(
        &mut builder,
        &fb::FilterArgs {
            kind: fb::FilterType(4),
            pattern: None,
        },
    );
    let table = fb::MultiGetRequest::create(
        &mut builder,
        &fb::MultiGetRequestArgs {
            sort_key_filter: Some(filter),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::MultiGetRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "unknown filter type 4");

    let mut builder = FlatBufferBuilder::new();
    let mutation = fb::Mutation::create(
        &mut builder,
        &fb::MutationArgs {
            op: fb::MutationOp(9),
            ..Default::default()
        },
    );
    let mutations = builder.create_vector(&[mutation]);
    let table = fb::CheckAndMutateRequest::create(
        &mut builder,
        &fb::CheckAndMutateRequestArgs {
            mutations: Some(mutations),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::CheckAndMutateRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "unknown mutation op 9");

    let mut builder = FlatBufferBuilder::new();
    let table = fb::GetScannerRequest::create(
        &mut builder,
        &fb::GetScannerRequestArgs {
            range_kind: fb::ScanRangeKind(2),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::GetScannerRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "unknown scan range kind 2");
}

fn response_with_body(body_type: fb::ResponseBody, body: Union, builder: &mut Builder) -> Vec<u8> {
    let root = fb::ResponseEnvelope::create(
        builder,
        &fb::ResponseEnvelopeArgs {
            request_id: 6,
            error: fb::ErrorCode::Ok,
            message: None,
            body_type,
            body: Some(body),
        },
    );
    builder.finish(root, None);
    finished(builder)
}

#[test]
fn invalid_meta_messages_are_rejected() {
    // Proves an unknown table status, a table or description reply without its table info, and a beacon replica without a gpid are Invalid.
    let mut builder = FlatBufferBuilder::new();
    let info = fb::TableInfo::create(
        &mut builder,
        &fb::TableInfoArgs {
            status: fb::TableStatus(2),
            ..Default::default()
        },
    );
    let table =
        fb::TableResponse::create(&mut builder, &fb::TableResponseArgs { info: Some(info) });
    let body = response_with_body(
        fb::ResponseBody::TableResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_invalid(decode_response(&body), "unknown table status 2");

    let mut builder = FlatBufferBuilder::new();
    let info = fb::TableInfo::create(
        &mut builder,
        &fb::TableInfoArgs {
            status: fb::TableStatus(255),
            ..Default::default()
        },
    );
    let tables = builder.create_vector(&[info]);
    let table = fb::TablesResponse::create(
        &mut builder,
        &fb::TablesResponseArgs {
            tables: Some(tables),
        },
    );
    let body = response_with_body(
        fb::ResponseBody::TablesResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_invalid(decode_response(&body), "unknown table status 255");

    let mut builder = FlatBufferBuilder::new();
    let table = fb::TableResponse::create(&mut builder, &fb::TableResponseArgs { info: None });
    let body = response_with_body(
        fb::ResponseBody::TableResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_invalid(
        decode_response(&body),
        "table response carries no table info",
    );

    let mut builder = FlatBufferBuilder::new();
    let table = fb::DescriptionResponse::create(
        &mut builder,
        &fb::DescriptionResponseArgs {
            info: None,
            partitions: None,
        },
    );
    let body = response_with_body(
        fb::ResponseBody::DescriptionResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_invalid(
        decode_response(&body),
        "description response carries no table info",
    );

    let mut builder = FlatBufferBuilder::new();
    let replica = fb::HostedReplica::create(
        &mut builder,
        &fb::HostedReplicaArgs {
            gpid: None,
            shard: 1,
            ..Default::default()
        },
    );
    let replicas = builder.create_vector(&[replica]);
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            replicas: Some(replicas),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "beacon replica carries no gpid");
    assert_eq!(peek_request_id(&body), Some(77));

    let mut builder = FlatBufferBuilder::new();
    let table = fb::RemoveSecondaryRequest::create(
        &mut builder,
        &fb::RemoveSecondaryRequestArgs {
            gpid: None,
            ballot: 3,
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::RemoveSecondaryRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "remove_secondary carries no gpid");

    let mut builder = FlatBufferBuilder::new();
    let gpid = fb::Gpid::new(1, 0);
    let replica = fb::HostedReplica::create(
        &mut builder,
        &fb::HostedReplicaArgs {
            gpid: Some(&gpid),
            role: fb::ReplicaRole(9),
            ..Default::default()
        },
    );
    let replicas = builder.create_vector(&[replica]);
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            replicas: Some(replicas),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "unknown replica role 9");
}

#[test]
fn beacon_fields_absent_in_old_messages_read_as_todays_values() {
    // Proves a beacon replica and ack written without the replication fields decode as a primary with zero decrees, an empty configuration and lease 0.
    let mut builder = FlatBufferBuilder::new();
    let gpid = fb::Gpid::new(1, 2);
    let replica = fb::HostedReplica::create(
        &mut builder,
        &fb::HostedReplicaArgs {
            gpid: Some(&gpid),
            shard: 1,
            ballot: 1,
            decree_applied: 4,
            ..Default::default()
        },
    );
    let replicas = builder.create_vector(&[replica]);
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            replicas: Some(replicas),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    let (_, request) = decode_request(&body).unwrap();
    let Request::Beacon(beacon) = request else {
        panic!("decoded {request:?}");
    };
    assert_eq!(beacon.replicas[0].role, ReplicaRole::Primary);
    assert_eq!(beacon.replicas[0].decree_applied, 4);
    assert_eq!(beacon.replicas[0].decree_prepared, 0);
    assert_eq!(beacon.replicas[0].decree_committed, 0);

    let mut builder = FlatBufferBuilder::new();
    let assignment = fb::ReplicaAssignment::create(
        &mut builder,
        &fb::ReplicaAssignmentArgs {
            app_id: 1,
            ballot: 2,
            ..Default::default()
        },
    );
    let assignments = builder.create_vector(&[assignment]);
    let table = fb::BeaconAckResponse::create(
        &mut builder,
        &fb::BeaconAckResponseArgs {
            assignments: Some(assignments),
            ..Default::default()
        },
    );
    let body = response_with_body(
        fb::ResponseBody::BeaconAckResponse,
        table.as_union_value(),
        &mut builder,
    );
    let (_, response) = decode_response(&body).unwrap();
    let Ok(ResponseBody::BeaconAck(ack)) = response else {
        panic!("decoded {response:?}");
    };
    assert_eq!(ack.lease_ms, 0);
    assert_eq!(ack.assignments[0].primary, "");
    assert!(ack.assignments[0].secondaries.is_empty());
}

#[test]
fn absent_meta_fields_decode_as_empty_defaults() {
    // Proves meta tables with every optional field absent decode to empty strings and lists and to reserve_seconds None.
    let mut builder = FlatBufferBuilder::new();
    let table = fb::DropTableRequest::create(&mut builder, &fb::DropTableRequestArgs::default());
    let body = request_with_body(
        fb::RequestBody::DropTableRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::DropTable {
            table: String::new(),
            reserve_seconds: None,
        }
    );

    let mut builder = FlatBufferBuilder::new();
    let table = fb::BeaconRequest::create(&mut builder, &fb::BeaconRequestArgs::default());
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Beacon(NodeBeacon::default())
    );

    let mut builder = FlatBufferBuilder::new();
    let table = fb::BeaconAckResponse::create(&mut builder, &fb::BeaconAckResponseArgs::default());
    let body = response_with_body(
        fb::ResponseBody::BeaconAckResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_eq!(
        decode_response(&body).unwrap(),
        (6, Ok(ResponseBody::BeaconAck(BeaconAck::default())))
    );
}

#[test]
fn every_balancer_op_round_trips() {
    // Proves each balancer op of the schema is produced by exactly one sampled request, and each sample decodes to what was encoded.
    let mut encoder = Encoder::new();
    let mut ops = Vec::new();
    for (index, request) in every_balancer_request().into_iter().enumerate() {
        let request = Request::Balancer(request);
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &request);
        let mut out = Vec::new();
        encoder
            .request_frame(&Envelope::default(), &request, &mut out)
            .unwrap();
        let root = flatbuffers::root::<fb::RequestEnvelope>(&out[FRAME_HEADER_BYTES..]).unwrap();
        let op = root.body_as_balancer_request().unwrap().op();
        assert!(op.variant_name().is_some(), "{request:?}");
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    assert_eq!(ops.len(), fb::BalancerOp::ENUM_VALUES.len());
    assert_eq!(fb::BalancerOp::ENUM_MAX, 7);
}

#[test]
fn invalid_balancer_messages_are_rejected() {
    // Proves an unknown balancer op, a balancer move without a gpid and a switch_primary without a gpid are Invalid, with their request id still readable.
    for op in [8u8, 200, 255] {
        let mut builder = FlatBufferBuilder::new();
        let body = balancer_body(
            &mut builder,
            &fb::BalancerRequestArgs {
                op: fb::BalancerOp(op),
                flag: true,
                ..Default::default()
            },
        );
        assert_invalid(decode_request(&body), &format!("unknown balancer op {op}"));
        assert_eq!(peek_request_id(&body), Some(77));
    }

    for op in [
        fb::BalancerOp::MovePrimary,
        fb::BalancerOp::CopyReplica,
        fb::BalancerOp::RemoveReplica,
    ] {
        let mut builder = FlatBufferBuilder::new();
        let to = builder.create_string("127.0.0.1:34901");
        let body = balancer_body(
            &mut builder,
            &fb::BalancerRequestArgs {
                op,
                gpid: None,
                to: Some(to),
                ..Default::default()
            },
        );
        assert_invalid(decode_request(&body), "balancer move carries no gpid");
    }

    let mut builder = FlatBufferBuilder::new();
    let table = fb::SwitchPrimaryRequest::create(
        &mut builder,
        &fb::SwitchPrimaryRequestArgs {
            gpid: None,
            ballot: 3,
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::SwitchPrimaryRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "switch_primary carries no gpid");
}

#[test]
fn balancer_fields_absent_decode_as_empty_defaults() {
    // Proves a balancer request with only its op decodes with empty strings and false flags, and fields its op does not use are ignored.
    let mut builder = FlatBufferBuilder::new();
    let body = balancer_body(
        &mut builder,
        &fb::BalancerRequestArgs {
            op: fb::BalancerOp::SetLevel,
            ..Default::default()
        },
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Balancer(BalancerRequest::SetLevel {
            level: String::new()
        })
    );

    let mut builder = FlatBufferBuilder::new();
    let body = balancer_body(
        &mut builder,
        &fb::BalancerRequestArgs {
            op: fb::BalancerOp::RemoveNode,
            ..Default::default()
        },
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Balancer(BalancerRequest::RemoveNode {
            node: String::new(),
            cancel: false,
        })
    );

    let mut builder = FlatBufferBuilder::new();
    let gpid = fb::Gpid::new(1, 2);
    let level = builder.create_string("steady");
    let from = builder.create_string("a");
    let body = balancer_body(
        &mut builder,
        &fb::BalancerRequestArgs {
            op: fb::BalancerOp::ListMoves,
            level: Some(level),
            gpid: Some(&gpid),
            from: Some(from),
            to: None,
            flag: true,
        },
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Balancer(BalancerRequest::ListMoves)
    );
}

/// A request envelope around a backup request built from `args`.
fn backup_body(builder: &mut Builder, args: &fb::BackupRequestArgs) -> Vec<u8> {
    let table = fb::BackupRequest::create(builder, args);
    request_with_body(
        fb::RequestBody::BackupRequest,
        Some(table.as_union_value()),
        builder,
    )
}

#[test]
fn every_backup_op_round_trips() {
    // Proves each backup op of the schema is produced by a sampled request, each sample decodes to what was encoded, and the body is the last request union member.
    let mut encoder = Encoder::new();
    let mut ops = Vec::new();
    for (index, request) in every_backup_request().into_iter().enumerate() {
        let request = Request::Backup(request);
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &request);
        let mut out = Vec::new();
        encoder
            .request_frame(&Envelope::default(), &request, &mut out)
            .unwrap();
        let root = flatbuffers::root::<fb::RequestEnvelope>(&out[FRAME_HEADER_BYTES..]).unwrap();
        assert_eq!(root.body_type(), fb::RequestBody::BackupRequest);
        let op = root.body_as_backup_request().unwrap().op();
        assert!(op.variant_name().is_some(), "{request:?}");
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    assert_eq!(ops.len(), fb::BackupOp::ENUM_VALUES.len());
    assert_eq!(fb::BackupOp::ENUM_MAX, 11);
    assert_eq!(fb::RequestBody::BackupRequest.0, 33);
    assert_eq!(fb::RequestBody::PartitionSplitRequest.0, 34);
    assert_eq!(fb::RequestBody::DupRequest.0, 35);
    assert_eq!(fb::RequestBody::DuplicateRequest.0, 36);
    assert_eq!(fb::RequestBody::ENUM_MAX, 36);
}

#[test]
fn backup_reports_and_orders_round_trip() {
    // Proves a beacon with two backup reports in every pair of job states and an ack with two backup orders decode to exactly what was encoded, states keeping their schema numbers.
    let states = [
        BackupJobState::Running,
        BackupJobState::Done,
        BackupJobState::Failed,
    ];
    for state in states {
        assert_eq!(
            fb::BackupJobState(state as u8).variant_name(),
            Some(format!("{state:?}").as_str())
        );
    }
    assert_eq!(fb::BackupJobState::ENUM_MAX, BackupJobState::Failed as u8);
    let mut encoder = Encoder::new();
    for (index, (state, other)) in states
        .iter()
        .flat_map(|state| states.iter().map(move |other| (*state, *other)))
        .enumerate()
    {
        let beacon = Request::Beacon(NodeBeacon {
            node: "127.0.0.1:34801".to_string(),
            incarnation: 9,
            backups: sample_backup_reports(state, other),
            ..NodeBeacon::default()
        });
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &beacon);
    }
    let ack = Ok(ResponseBody::BeaconAck(BeaconAck {
        lease_ms: 600,
        backups: sample_backup_orders(),
        restores: sample_restore_orders(),
        ..BeaconAck::default()
    }));
    round_trip_response(&mut encoder, 8, &ack);
}

#[test]
fn invalid_backup_messages_are_rejected() {
    // Proves an unknown backup op, an unknown backup job state and a backup report or order without its gpid are Invalid, with the request id still readable.
    for op in [12u8, 200, 255] {
        let mut builder = FlatBufferBuilder::new();
        let table = builder.create_string("temp");
        let body = backup_body(
            &mut builder,
            &fb::BackupRequestArgs {
                op: fb::BackupOp(op),
                table: Some(table),
                backup_id: 1,
                ..Default::default()
            },
        );
        assert_invalid(decode_request(&body), &format!("unknown backup op {op}"));
        assert_eq!(peek_request_id(&body), Some(77));
    }

    for state in [3u8, 255] {
        let mut builder = FlatBufferBuilder::new();
        let gpid = fb::Gpid::new(1, 0);
        let report = fb::BackupReport::create(
            &mut builder,
            &fb::BackupReportArgs {
                backup_id: 1,
                gpid: Some(&gpid),
                state: fb::BackupJobState(state),
                ..Default::default()
            },
        );
        let backups = builder.create_vector(&[report]);
        let table = fb::BeaconRequest::create(
            &mut builder,
            &fb::BeaconRequestArgs {
                backups: Some(backups),
                ..Default::default()
            },
        );
        let body = request_with_body(
            fb::RequestBody::BeaconRequest,
            Some(table.as_union_value()),
            &mut builder,
        );
        assert_invalid(
            decode_request(&body),
            &format!("unknown backup job state {state}"),
        );
        assert_eq!(peek_request_id(&body), Some(77));
    }

    let mut builder = FlatBufferBuilder::new();
    let report = fb::BackupReport::create(
        &mut builder,
        &fb::BackupReportArgs {
            backup_id: 1,
            gpid: None,
            state: fb::BackupJobState::Done,
            ..Default::default()
        },
    );
    let backups = builder.create_vector(&[report]);
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            backups: Some(backups),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(
        decode_request(&body),
        "beacon backup report carries no gpid",
    );

    let mut builder = FlatBufferBuilder::new();
    let order = fb::BackupOrder::create(
        &mut builder,
        &fb::BackupOrderArgs {
            backup_id: 1,
            gpid: None,
            ..Default::default()
        },
    );
    let backups = builder.create_vector(&[order]);
    let table = fb::BeaconAckResponse::create(
        &mut builder,
        &fb::BeaconAckResponseArgs {
            backups: Some(backups),
            ..Default::default()
        },
    );
    let body = response_with_body(
        fb::ResponseBody::BeaconAckResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_invalid(
        decode_response(&body),
        "beacon ack backup order carries no gpid",
    );
}

#[test]
fn backup_fields_absent_decode_as_empty_defaults() {
    // Proves a backup request with only its op decodes with empty strings and id 0, fields its op does not use are ignored, and a report or order with only its gpid decodes as Running with zeros and empty strings.
    for (op, expected) in [
        (
            fb::BackupOp::Start,
            BackupRequest::Start {
                table: String::new(),
                url: String::new(),
            },
        ),
        (
            fb::BackupOp::List,
            BackupRequest::List {
                table: String::new(),
            },
        ),
        (fb::BackupOp::Query, BackupRequest::Query { backup_id: 0 }),
    ] {
        let mut builder = FlatBufferBuilder::new();
        let body = backup_body(
            &mut builder,
            &fb::BackupRequestArgs {
                op,
                ..Default::default()
            },
        );
        assert_eq!(decode_request(&body).unwrap().1, Request::Backup(expected));
    }

    let mut builder = FlatBufferBuilder::new();
    let url = builder.create_string("file:///tmp/b");
    let body = backup_body(
        &mut builder,
        &fb::BackupRequestArgs {
            op: fb::BackupOp::Query,
            table: None,
            url: Some(url),
            backup_id: 42,
            ..Default::default()
        },
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Backup(BackupRequest::Query { backup_id: 42 })
    );

    let mut builder = FlatBufferBuilder::new();
    let gpid = fb::Gpid::new(1, 2);
    let report = fb::BackupReport::create(
        &mut builder,
        &fb::BackupReportArgs {
            gpid: Some(&gpid),
            ..Default::default()
        },
    );
    let backups = builder.create_vector(&[report]);
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            backups: Some(backups),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Beacon(NodeBeacon {
            backups: vec![BackupReport {
                gpid: Gpid {
                    app_id: 1,
                    partition_index: 2,
                },
                ..BackupReport::default()
            }],
            ..NodeBeacon::default()
        })
    );

    let mut builder = FlatBufferBuilder::new();
    let order = fb::BackupOrder::create(
        &mut builder,
        &fb::BackupOrderArgs {
            gpid: Some(&gpid),
            ..Default::default()
        },
    );
    let backups = builder.create_vector(&[order]);
    let table = fb::BeaconAckResponse::create(
        &mut builder,
        &fb::BeaconAckResponseArgs {
            backups: Some(backups),
            ..Default::default()
        },
    );
    let body = response_with_body(
        fb::ResponseBody::BeaconAckResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_eq!(
        decode_response(&body).unwrap(),
        (
            6,
            Ok(ResponseBody::BeaconAck(BeaconAck {
                backups: vec![BackupOrder {
                    gpid: Gpid {
                        app_id: 1,
                        partition_index: 2,
                    },
                    ..BackupOrder::default()
                }],
                ..BeaconAck::default()
            }))
        )
    );
}

#[test]
fn balancing_fields_absent_in_old_messages_read_as_defaults() {
    // Proves a node info and a replica assignment written without the balancing fields decode with zero counts, empty per-shard lists, not removing and no handoff.
    let mut builder = FlatBufferBuilder::new();
    let name = builder.create_string("127.0.0.1:34801");
    let node = fb::NodeInfo::create(
        &mut builder,
        &fb::NodeInfoArgs {
            node: Some(name),
            alive: true,
            replica_count: 4,
            last_beacon_ms_ago: 10,
            ..Default::default()
        },
    );
    let nodes = builder.create_vector(&[node]);
    let table =
        fb::NodesResponse::create(&mut builder, &fb::NodesResponseArgs { nodes: Some(nodes) });
    let body = response_with_body(
        fb::ResponseBody::NodesResponse,
        table.as_union_value(),
        &mut builder,
    );
    assert_eq!(
        decode_response(&body).unwrap(),
        (
            6,
            Ok(ResponseBody::Nodes(vec![NodeInfo {
                node: "127.0.0.1:34801".to_string(),
                shard_addresses: Vec::new(),
                alive: true,
                replica_count: 4,
                last_beacon_ms_ago: 10,
                primary_count: 0,
                shard_replica_counts: Vec::new(),
                shard_primary_counts: Vec::new(),
                removing: false,
            }]))
        )
    );

    let mut builder = FlatBufferBuilder::new();
    let primary = builder.create_string("127.0.0.1:34801");
    let assignment = fb::ReplicaAssignment::create(
        &mut builder,
        &fb::ReplicaAssignmentArgs {
            app_id: 1,
            ballot: 2,
            primary: Some(primary),
            replica_count: 3,
            ..Default::default()
        },
    );
    let assignments = builder.create_vector(&[assignment]);
    let table = fb::BeaconAckResponse::create(
        &mut builder,
        &fb::BeaconAckResponseArgs {
            assignments: Some(assignments),
            ..Default::default()
        },
    );
    let body = response_with_body(
        fb::ResponseBody::BeaconAckResponse,
        table.as_union_value(),
        &mut builder,
    );
    let (_, response) = decode_response(&body).unwrap();
    let Ok(ResponseBody::BeaconAck(ack)) = response else {
        panic!("decoded {response:?}");
    };
    assert_eq!(
        ack.assignments,
        vec![ReplicaAssignment {
            app_id: 1,
            ballot: 2,
            primary: "127.0.0.1:34801".to_string(),
            replica_count: 3,
            ..ReplicaAssignment::default()
        }]
    );
    assert_eq!(ack.assignments[0].handoff_to, "");
}

fn response_envelope(
    error: fb::ErrorCode,
    body_type: fb::ResponseBody,
    with_body: bool,
) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let body = with_body
        .then(|| fb::DoneResponse::create(&mut builder, &fb::DoneResponseArgs {}).as_union_value());
    let root = fb::ResponseEnvelope::create(
        &mut builder,
        &fb::ResponseEnvelopeArgs {
            request_id: 5,
            error,
            message: None,
            body_type,
            body,
        },
    );
    builder.finish(root, None);
    finished(&mut builder)
}

#[test]
fn inconsistent_responses_are_invalid() {
    // Proves unknown error codes, error responses with a body, bodiless successes and unknown body types are rejected.
    let first_unknown = ErrorCode::ALL.len() as i16;
    let unknown_code =
        response_envelope(fb::ErrorCode(first_unknown), fb::ResponseBody::NONE, false);
    assert_invalid(
        decode_response(&unknown_code),
        &format!("unknown error code {first_unknown}"),
    );
    let negative_code = response_envelope(fb::ErrorCode(-1), fb::ResponseBody::NONE, false);
    assert_invalid(decode_response(&negative_code), "unknown error code -1");

    let error_with_body =
        response_envelope(fb::ErrorCode::Busy, fb::ResponseBody::DoneResponse, true);
    assert_invalid(decode_response(&error_with_body), "carries a body");

    let success_without_body = response_envelope(fb::ErrorCode::Ok, fb::ResponseBody::NONE, false);
    assert_invalid(decode_response(&success_without_body), "no body");

    let unknown_body = response_envelope(fb::ErrorCode::Ok, fb::ResponseBody(99), true);
    assert_invalid(
        decode_response(&unknown_body),
        "unknown response body type 99",
    );

    let error_without_message =
        response_envelope(fb::ErrorCode::Timeout, fb::ResponseBody::NONE, false);
    assert_eq!(
        decode_response(&error_without_message).unwrap(),
        (5, Err(OpError::new(ErrorCode::Timeout, "")))
    );
}

#[test]
fn garbage_and_wrong_root_fail_verification() {
    // Proves non-flatbuffer bytes fail with Verify, not a panic or a bogus message.
    for garbage in [
        &b""[..],
        &[0u8; 3],
        &[0xFF; 64],
        &[4, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F],
    ] {
        assert!(
            matches!(decode_request(garbage), Err(DecodeError::Verify(_))),
            "{garbage:?}"
        );
        assert!(
            matches!(decode_response(garbage), Err(DecodeError::Verify(_))),
            "{garbage:?}"
        );
        assert_eq!(peek_request_id(garbage), None, "{garbage:?}");
    }
}

#[test]
fn shared_subtrees_cannot_amplify_decoding() {
    // Proves a buffer whose list repeats one large value many times is refused by the apparent-size bound.
    let mut builder = FlatBufferBuilder::new();
    let data = builder.create_vector(&vec![0xEEu8; 64 * 1024]);
    let item = fb::Bytes::create(&mut builder, &fb::BytesArgs { data: Some(data) });
    let items = builder.create_vector(&vec![item; 10_000]);
    let table = fb::MultiDelRequest::create(
        &mut builder,
        &fb::MultiDelRequestArgs {
            hash_key: None,
            sort_keys: Some(items),
        },
    );
    let body = request_with_body(
        fb::RequestBody::MultiDelRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert!(body.len() < 200 * 1024);
    assert!(matches!(decode_request(&body), Err(DecodeError::Verify(_))));
}

#[test]
fn peek_reads_the_id_of_requests_the_decoder_rejects() {
    // Proves peek_request_id returns the id of valid and semantically invalid envelopes, and 0 when it is absent.
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    let envelope = sample_envelope(0x0123_4567_89AB_CDEF);
    encoder
        .request_frame(
            &envelope,
            &Request::QueryRoute { table: "t".into() },
            &mut out,
        )
        .unwrap();
    assert_eq!(
        peek_request_id(&out[FRAME_HEADER_BYTES..]),
        Some(envelope.request_id)
    );

    let mut builder = FlatBufferBuilder::new();
    let root = fb::RequestEnvelope::create(&mut builder, &fb::RequestEnvelopeArgs::default());
    builder.finish(root, None);
    assert_eq!(peek_request_id(builder.finished_data()), Some(0));
}

// ---------------------------------------------------------------------------
// Robustness.

/// xorshift64*: a tiny deterministic generator, so failures replay exactly.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn mutate(prng: &mut Prng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match prng.below(5) {
        0 => {
            for _ in 0..=prng.below(4) {
                if !bytes.is_empty() {
                    let index = prng.below(bytes.len());
                    bytes[index] ^= 1 << prng.below(8);
                }
            }
        }
        1 => {
            if !bytes.is_empty() {
                let index = prng.below(bytes.len());
                bytes[index] = prng.next() as u8;
            }
        }
        2 => bytes.truncate(prng.below(bytes.len() + 1)),
        3 => {
            // Overwrite a 4-byte word with an extreme offset or length.
            if bytes.len() >= 4 {
                let index = prng.below(bytes.len() - 3) & !3;
                let word = [0u32, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000][prng.below(5)];
                bytes[index..index + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
        _ => {
            let extra = prng.below(16);
            bytes.extend((0..extra).map(|_| prng.next() as u8));
        }
    }
    bytes
}

#[test]
fn decoders_never_panic_on_random_or_mutated_input() {
    // Proves thousands of random and mutated buffers only ever produce values or errors from every decoder.
    let mut prng = Prng(0x9E37_79B9_7F4A_7C15);
    let mut encoder = Encoder::new();
    let mut request_bodies = Vec::new();
    for (index, request) in every_request().iter().enumerate() {
        let mut out = Vec::new();
        encoder
            .request_frame(&sample_envelope(index as u64), request, &mut out)
            .unwrap();
        request_bodies.push(out);
    }
    let mut response_bodies = Vec::new();
    for (index, response) in every_response().iter().enumerate() {
        let mut out = Vec::new();
        encoder
            .response_frame(index as u64, response, &mut out)
            .unwrap();
        response_bodies.push(out);
    }
    let mut decoded_ok = 0usize;
    for round in 0..20_000 {
        let frames = if round % 2 == 0 {
            &request_bodies
        } else {
            &response_bodies
        };
        let frame = &frames[prng.below(frames.len())];
        let candidate = if round % 10 == 9 {
            let len = prng.below(256);
            (0..len).map(|_| prng.next() as u8).collect()
        } else {
            mutate(&mut prng, frame)
        };
        // As a whole frame through the frame decoder, in random chunks.
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut offset = 0;
        while offset < candidate.len() {
            let chunk = 1 + prng.below(candidate.len() - offset);
            decoder.extend(&candidate[offset..offset + chunk]);
            offset += chunk;
            while let Ok(Some(frame)) = decoder.next_frame() {
                let _ = decode_request(&frame.body);
                let _ = decode_response(&frame.body);
            }
        }
        // And as a bare body.
        let body = candidate
            .get(FRAME_HEADER_BYTES..)
            .unwrap_or(&candidate[..]);
        decoded_ok += usize::from(decode_request(body).is_ok());
        decoded_ok += usize::from(decode_response(body).is_ok());
        let _ = peek_request_id(body);
    }
    // Some mutations (flipped payload bits) stay decodable: the test reached the decoders.
    assert!(decoded_ok > 0);
}

#[test]
fn size_estimates_bound_the_encoded_size() {
    // Proves the pre-encoding size estimate is an upper bound for every sample message, so refusing on it is safe.
    let mut encoder = Encoder::new();
    for request in every_request() {
        let mut out = Vec::new();
        encoder
            .request_frame(&sample_envelope(1), &request, &mut out)
            .unwrap();
        let body_bytes = out.len() - FRAME_HEADER_BYTES;
        assert!(
            body_bytes <= request_bytes_estimate(&request),
            "{}",
            request.name()
        );
    }
    for response in every_response() {
        let mut out = Vec::new();
        encoder.response_frame(1, &response, &mut out).unwrap();
        let body_bytes = out.len() - FRAME_HEADER_BYTES;
        assert!(
            body_bytes <= response_bytes_estimate(&response),
            "{response:?}"
        );
    }
}

fn dup_body(builder: &mut Builder, args: &fb::DupRequestArgs) -> Vec<u8> {
    let table = fb::DupRequest::create(builder, args);
    request_with_body(
        fb::RequestBody::DupRequest,
        Some(table.as_union_value()),
        builder,
    )
}

#[test]
fn every_dup_op_round_trips() {
    // Proves each dup op of the schema is produced by a sampled request and decodes to what was encoded, duplicate writes round-trip as writes, and the dup bodies end the request union.
    let mut encoder = Encoder::new();
    let mut ops = Vec::new();
    for (index, request) in every_dup_request().into_iter().enumerate() {
        let request = Request::Dup(request);
        assert!(request.is_meta() && !request.is_write(), "{request:?}");
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &request);
        let mut out = Vec::new();
        encoder
            .request_frame(&Envelope::default(), &request, &mut out)
            .unwrap();
        let root = flatbuffers::root::<fb::RequestEnvelope>(&out[FRAME_HEADER_BYTES..]).unwrap();
        let op = root.body_as_dup_request().unwrap().op();
        assert!(op.variant_name().is_some(), "{request:?}");
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    assert_eq!(ops.len(), fb::DupOp::ENUM_VALUES.len());
    for (index, request) in sample_duplicate_requests().into_iter().enumerate() {
        let request = Request::Duplicate(request);
        assert!(request.is_write() && !request.is_meta(), "{request:?}");
        assert_eq!(request.hash_key(), None);
        round_trip_request(&mut encoder, &sample_envelope(index as u64), &request);
    }
    assert_eq!(
        fb::RequestBody::ENUM_MAX,
        fb::RequestBody::DuplicateRequest.0
    );
}

#[test]
fn dup_reports_and_orders_round_trip() {
    // Proves a beacon with duplication reports and an ack with duplication orders and the cluster id decode to exactly what was encoded, statuses keeping their schema numbers.
    for status in [DupStatus::Running, DupStatus::Paused] {
        assert_eq!(
            fb::DupStatus(status as u8).variant_name(),
            Some(format!("{status:?}").as_str())
        );
    }
    assert_eq!(fb::DupStatus::ENUM_MAX, DupStatus::Paused as u8);
    let mut encoder = Encoder::new();
    let beacon = Request::Beacon(NodeBeacon {
        node: "127.0.0.1:34801".to_string(),
        incarnation: 9,
        dups: sample_dup_reports(),
        ..NodeBeacon::default()
    });
    round_trip_request(&mut encoder, &sample_envelope(1), &beacon);
    let ack = Ok(ResponseBody::BeaconAck(BeaconAck {
        lease_ms: 600,
        dups: sample_dup_orders(),
        cluster_id: 2,
        ..BeaconAck::default()
    }));
    round_trip_response(&mut encoder, 8, &ack);
}

#[test]
fn invalid_dup_messages_are_rejected() {
    // Proves an unknown dup op, an unknown dup status, and a dup report or order without its gpid are Invalid, never a default.
    let mut builder = FlatBufferBuilder::new();
    let body = dup_body(
        &mut builder,
        &fb::DupRequestArgs {
            op: fb::DupOp(5),
            ..Default::default()
        },
    );
    assert_invalid(decode_request(&body), "unknown dup op 5");

    let mut builder = FlatBufferBuilder::new();
    let report = fb::DupReport::create(&mut builder, &fb::DupReportArgs::default());
    let dups = builder.create_vector(&[report]);
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            dups: Some(dups),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_invalid(decode_request(&body), "dup report carries no gpid");

    let gpid = fb::Gpid::new(1, 0);
    for (gpid, status, needle) in [
        (Some(&gpid), fb::DupStatus(2), "unknown dup status 2"),
        (None, fb::DupStatus::Running, "dup order carries no gpid"),
    ] {
        let mut builder = FlatBufferBuilder::new();
        let order = fb::DupOrder::create(
            &mut builder,
            &fb::DupOrderArgs {
                gpid,
                status,
                ..Default::default()
            },
        );
        let dups = builder.create_vector(&[order]);
        let table = fb::BeaconAckResponse::create(
            &mut builder,
            &fb::BeaconAckResponseArgs {
                dups: Some(dups),
                ..Default::default()
            },
        );
        let body = response_with_body(
            fb::ResponseBody::BeaconAckResponse,
            table.as_union_value(),
            &mut builder,
        );
        assert_invalid(decode_response(&body), needle);
    }
}

#[test]
fn dup_fields_absent_in_old_messages_read_as_defaults() {
    // Proves a beacon and an ack of an older peer (no dups, no cluster id) decode with no reports, no orders and cluster id 0, and absent dup request and duplicate fields read as empty.
    let mut builder = FlatBufferBuilder::new();
    let node = builder.create_string("127.0.0.1:34801");
    let table = fb::BeaconRequest::create(
        &mut builder,
        &fb::BeaconRequestArgs {
            node: Some(node),
            incarnation: 3,
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::BeaconRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    let (_, request) = decode_request(&body).unwrap();
    let Request::Beacon(beacon) = request else {
        panic!("decoded {request:?}");
    };
    assert!(beacon.dups.is_empty());

    let mut builder = FlatBufferBuilder::new();
    let table = fb::BeaconAckResponse::create(
        &mut builder,
        &fb::BeaconAckResponseArgs {
            lease_ms: 600,
            ..Default::default()
        },
    );
    let body = response_with_body(
        fb::ResponseBody::BeaconAckResponse,
        table.as_union_value(),
        &mut builder,
    );
    let (_, response) = decode_response(&body).unwrap();
    let Ok(ResponseBody::BeaconAck(ack)) = response else {
        panic!("decoded {response:?}");
    };
    assert!(ack.dups.is_empty());
    assert_eq!(ack.cluster_id, 0);

    let mut builder = FlatBufferBuilder::new();
    let body = dup_body(&mut builder, &fb::DupRequestArgs::default());
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Dup(DupRequest::Add {
            table: String::new(),
            remote_metas: Vec::new(),
            remote_table: String::new(),
        })
    );

    let mut builder = FlatBufferBuilder::new();
    let mutation = fb::DupMutation::create(&mut builder, &fb::DupMutationArgs::default());
    let mutations = builder.create_vector(&[mutation]);
    let table = fb::DuplicateRequest::create(
        &mut builder,
        &fb::DuplicateRequestArgs {
            mutations: Some(mutations),
            ..Default::default()
        },
    );
    let body = request_with_body(
        fb::RequestBody::DuplicateRequest,
        Some(table.as_union_value()),
        &mut builder,
    );
    assert_eq!(
        decode_request(&body).unwrap().1,
        Request::Duplicate(DuplicateRequest {
            source_cluster_id: 0,
            dup_id: 0,
            mutations: vec![DupMutation::default()],
        })
    );
}
