//! Round trips: every request through the client encoder, both header
//! versions and the server decoder; every response shape through the server
//! encoder and the client decoder.

use super::*;
use crate::message::{
    CheckAndSetResult, ErrorCode, OpError, Record, Response, ResponseBody, SCAN_CONTEXT_COMPLETE,
};

const SERVER: &str = "10.1.2.3:34801";

fn context() -> ReplyContext<'static> {
    ReplyContext {
        app_id: 4,
        partition_index: 6,
        server: SERVER,
    }
}

#[test]
fn every_request_survives_both_header_versions() {
    // Proves each data request encodes to a call that, framed with header v0 and v1 and
    // decoded, is the same request (Exist travels as TTL), under its RPC name and seqid.
    for (index, request) in every_data_request().into_iter().enumerate() {
        let seqid = index as i32 * 3 - 5;
        let (name, body) = encode_data_call(seqid, &request, NOW).unwrap();
        for version in [0, 1] {
            let header = RequestHeader {
                version,
                app_id: 2,
                partition_index: index as i32,
                timeout_ms: 100,
                partition_hash: index as u64 * 0x1234_5678_9abc,
                is_backup_request: version == 1,
            };
            let frame = through_decoder(&header, &body);
            assert_eq!(frame.header, header);
            let call = decode_call(&frame.body, NOW).unwrap();
            assert_eq!(call.name, name);
            assert_eq!(call.seqid, seqid);
            assert_eq!(call.rpc, Rpc::Data(request.clone()), "{name}");
            assert_eq!(peek_call(&frame.body), Some((name.to_string(), seqid)));
        }
    }
    let exist = Request::Exist(Key::new("h", "s"));
    let (name, body) = encode_data_call(1, &exist, NOW).unwrap();
    assert_eq!(name, RPC_TTL);
    assert_eq!(
        decode_call(&body, NOW).unwrap().rpc,
        Rpc::Data(Request::Ttl(Key::new("h", "s")))
    );
}

#[test]
fn requests_without_a_pegasus_rpc_are_refused() {
    // Proves routing and meta requests cannot be encoded as Pegasus calls.
    for request in [
        Request::QueryRoute {
            table: "t".to_string(),
        },
        Request::ListNodes,
        Request::ClusterInfo,
    ] {
        let error = encode_data_call(1, &request, NOW).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
    }
}

#[test]
fn meta_calls_round_trip() {
    // Proves query-config and list-apps calls decode to their RPCs.
    let call = decode_call(&encode_query_config_call(11, "temp"), 0).unwrap();
    assert_eq!(call.name, RPC_QUERY_CONFIG);
    assert_eq!(call.seqid, 11);
    assert_eq!(
        call.rpc,
        Rpc::QueryConfig {
            app_name: "temp".to_string(),
            partition_indices: Vec::new()
        }
    );
    let call = decode_call(&encode_list_apps_call(12, APP_STATUS_AVAILABLE), 0).unwrap();
    assert_eq!(
        (call.name, call.seqid, call.rpc),
        (RPC_LIST_APPS, 12, Rpc::ListApps { status: 1 })
    );
}

#[test]
fn ttls_convert_against_now() {
    // Proves absolute↔relative TTLs: 0 is none, future times subtract, past or present times
    // become 1 (expires at the end of this second), u32 expire times beyond i32 survive, and
    // incr keeps 0 = keep and negative = clear.
    assert_eq!(ttl_seconds_of_expire_ts(0, NOW), 0);
    assert_eq!(ttl_seconds_of_expire_ts(NOW as i32 + 60, NOW), 60);
    assert_eq!(ttl_seconds_of_expire_ts(NOW as i32, NOW), 1);
    assert_eq!(ttl_seconds_of_expire_ts(5, NOW), 1);
    assert_eq!(expire_ts_of_ttl_seconds(0, NOW), 0);
    assert_eq!(expire_ts_of_ttl_seconds(60, NOW), NOW as i32 + 60);
    let far = u32::MAX - NOW - 1;
    let wire = expire_ts_of_ttl_seconds(far, NOW);
    assert!(wire < 0);
    assert_eq!(ttl_seconds_of_expire_ts(wire, NOW), far);
    assert_eq!(expire_ts_of_ttl_seconds(u32::MAX, NOW), -1); // saturates at u32::MAX
    assert_eq!(incr_ttl_seconds_of_expire_ts(0, NOW), 0);
    assert_eq!(incr_ttl_seconds_of_expire_ts(-7, NOW), -1);
    assert_eq!(incr_ttl_seconds_of_expire_ts(NOW as i32 + 9, NOW), 9);
    assert_eq!(incr_ttl_seconds_of_expire_ts(NOW as i32 - 9, NOW), 1);
    assert_eq!(incr_expire_ts_of_ttl_seconds(0, NOW), 0);
    assert_eq!(incr_expire_ts_of_ttl_seconds(-3, NOW), -1);
    assert_eq!(incr_expire_ts_of_ttl_seconds(9, NOW), NOW as i32 + 9);
    assert_eq!(incr_expire_ts_of_ttl_seconds(i32::MAX, NOW), i32::MAX);
}

fn reply_of(name: &str, request: &Request, response: &Response) -> Reply {
    let bytes = encode_data_reply(name, 77, request, response, &context()).unwrap();
    assert_eq!(reply_frame_len(&bytes), Ok(Some(bytes.len())));
    let reply = decode_reply(&bytes).unwrap();
    assert_eq!(reply.name, format!("{name}_ACK"));
    assert_eq!(reply.seqid, 77);
    reply
}

fn records() -> Vec<Record> {
    vec![
        Record {
            hash_key: b"h1".to_vec(),
            sort_key: b"s1".to_vec(),
            value: b"v1".to_vec(),
        },
        Record {
            hash_key: Vec::new(),
            sort_key: b"only".to_vec(),
            value: Vec::new(),
        },
    ]
}

/// One request of each RPC with the responses Markab can give it.
fn every_response() -> Vec<(Request, Response)> {
    let key = Key::new("hk", "sk");
    let scan_full = Request::GetScanner(ScanRequest::new(ScanRange::Full));
    let mut counting = ScanRequest::new(ScanRange::Full);
    counting.only_return_count = true;
    let check = CheckAndSetResult {
        set_succeeded: false,
        check_value_returned: true,
        check_value_exist: true,
        check_value: b"old".to_vec(),
    };
    let set = Request::Set {
        key: key.clone(),
        value: b"v".to_vec(),
        ttl_seconds: 0,
    };
    let multi_set = Request::MultiSet {
        hash_key: b"hk".to_vec(),
        kvs: Vec::new(),
        ttl_seconds: 0,
    };
    let cas = || {
        Request::CheckAndSet(CheckAndSetRequest {
            hash_key: b"hk".to_vec(),
            check_sort_key: b"c".to_vec(),
            check_type: CheckType::ValueExist,
            check_operand: Vec::new(),
            set_sort_key: b"c".to_vec(),
            set_value: b"v".to_vec(),
            set_ttl_seconds: 0,
            return_check_value: true,
        })
    };
    let cam = Request::CheckAndMutate(CheckAndMutateRequest {
        hash_key: b"hk".to_vec(),
        check_sort_key: b"c".to_vec(),
        check_type: CheckType::NoCheck,
        check_operand: Vec::new(),
        mutations: vec![Mutation::Delete {
            sort_key: b"c".to_vec(),
        }],
        return_check_value: false,
    });
    let failure = |code| Err(OpError::new(code, "x"));
    vec![
        (
            Request::Get(key.clone()),
            Ok(ResponseBody::Value(b"value".to_vec())),
        ),
        (
            Request::Get(key.clone()),
            Ok(ResponseBody::Value(Vec::new())),
        ),
        (Request::Get(key.clone()), failure(ErrorCode::NotFound)),
        (Request::Get(key.clone()), failure(ErrorCode::StorageError)),
        (set.clone(), Ok(ResponseBody::Done)),
        (set.clone(), failure(ErrorCode::InvalidArgument)),
        (set.clone(), failure(ErrorCode::UnknownOutcome)),
        (Request::Del(key.clone()), Ok(ResponseBody::Done)),
        (multi_set, Ok(ResponseBody::Done)),
        (Request::Ttl(key.clone()), Ok(ResponseBody::Ttl(-1))),
        (Request::Ttl(key.clone()), Ok(ResponseBody::Ttl(55))),
        (Request::Ttl(key.clone()), failure(ErrorCode::NotFound)),
        (
            Request::MultiGet(MultiGetRequest::range("hk")),
            Ok(ResponseBody::MultiGet {
                kvs: vec![
                    SortKeyValue {
                        sort_key: b"a".to_vec(),
                        value: b"1".to_vec(),
                    },
                    SortKeyValue::default(),
                ],
                incomplete: false,
            }),
        ),
        (
            Request::MultiGet(MultiGetRequest::range("hk")),
            Ok(ResponseBody::MultiGet {
                kvs: Vec::new(),
                incomplete: true,
            }),
        ),
        (
            Request::MultiDel {
                hash_key: b"hk".to_vec(),
                sort_keys: vec![b"a".to_vec()],
            },
            Ok(ResponseBody::Count(3)),
        ),
        (
            Request::SortKeyCount {
                hash_key: b"hk".to_vec(),
            },
            Ok(ResponseBody::Count(-1)),
        ),
        (
            Request::Incr {
                key: key.clone(),
                increment: 1,
                ttl_seconds: 0,
            },
            Ok(ResponseBody::Incr(42)),
        ),
        (cas(), Ok(ResponseBody::CheckAndSet(check.clone()))),
        (
            cas(),
            Ok(ResponseBody::CheckAndSet(CheckAndSetResult {
                set_succeeded: true,
                ..CheckAndSetResult::default()
            })),
        ),
        (cam, Ok(ResponseBody::CheckAndSet(check))),
        (
            Request::BatchGet {
                keys: vec![key.clone()],
            },
            Ok(ResponseBody::BatchGet(records())),
        ),
        (
            scan_full.clone(),
            Ok(ResponseBody::Scan {
                records: records(),
                count: 2,
                context_id: 12,
            }),
        ),
        (
            scan_full,
            Ok(ResponseBody::Scan {
                records: Vec::new(),
                count: 0,
                context_id: SCAN_CONTEXT_COMPLETE,
            }),
        ),
        (
            Request::GetScanner(counting),
            Ok(ResponseBody::Scan {
                records: Vec::new(),
                count: 500,
                context_id: 3,
            }),
        ),
        (
            Request::Scan { context_id: 3 },
            Ok(ResponseBody::Scan {
                records: records(),
                count: 2,
                context_id: 3,
            }),
        ),
        (
            Request::Scan { context_id: 3 },
            failure(ErrorCode::ScannerNotFound),
        ),
    ]
}

#[test]
fn every_response_survives_the_reply_codec() {
    // Proves each response Markab gives a data RPC comes back through encode_data_reply,
    // decode_reply and reply_to_response with the same body or error code, and every reply
    // carries the context's app id, partition and server.
    for (request, response) in every_response() {
        let (name, _) = encode_data_call(1, &request, NOW).unwrap();
        let reply = reply_of(name, &request, &response);
        assert_eq!(reply.error_name, "ERR_OK", "{name}");
        let trailer = match reply.result.clone().unwrap() {
            ReplyResult::Update {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::Read {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::Ttl {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::Count {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::MultiGet {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::MultiRemove {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::Incr {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::CheckAndSet {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::BatchGet {
                app_id,
                partition_index,
                server,
                ..
            }
            | ReplyResult::Scan {
                app_id,
                partition_index,
                server,
                ..
            } => (app_id, partition_index, server),
            other => panic!("{other:?}"),
        };
        assert_eq!(trailer, (4, 6, SERVER.to_string()), "{name}");
        let back = reply_to_response(&request, &reply);
        match (&response, &back) {
            (Ok(expected), Ok(actual)) => assert_eq!(expected, actual, "{name}"),
            (Err(expected), Err(actual)) => assert_eq!(expected.code, actual.code, "{name}"),
            _ => panic!("{name}: {response:?} came back as {back:?}"),
        }
    }
}

#[test]
fn storage_codes_land_in_the_pegasus_fields() {
    // Proves the Pegasus-visible fields: not found is error 1 with ERR_OK, incomplete is 7,
    // a failed check is 13 with the check value, a ttl without TTL is -1, scan keys are full
    // encoded keys, an unknown scanner is error 1 with context -2, and kv_count appears for
    // counting scans and empty batches only.
    let key = Key::new("hk", "sk");
    let reply = reply_of(
        RPC_GET,
        &Request::Get(key.clone()),
        &Err(OpError::new(ErrorCode::NotFound, "gone")),
    );
    assert!(matches!(
        reply.result,
        Some(ReplyResult::Read { error: 1, ref value, .. }) if value.is_empty()
    ));
    let reply = reply_of(
        RPC_MULTI_GET,
        &Request::MultiGet(MultiGetRequest::range("hk")),
        &Ok(ResponseBody::MultiGet {
            kvs: Vec::new(),
            incomplete: true,
        }),
    );
    assert!(matches!(
        reply.result,
        Some(ReplyResult::MultiGet { error: 7, .. })
    ));
    let reply = reply_of(
        RPC_CHECK_AND_SET,
        &Request::Get(key.clone()),
        &Ok(ResponseBody::CheckAndSet(CheckAndSetResult {
            set_succeeded: false,
            check_value_returned: true,
            check_value_exist: true,
            check_value: b"old".to_vec(),
        })),
    );
    assert_eq!(
        reply.result,
        Some(ReplyResult::CheckAndSet {
            error: 13,
            check_value_returned: true,
            check_value_exist: true,
            check_value: b"old".to_vec(),
            app_id: 4,
            partition_index: 6,
            decree: 0,
            server: SERVER.to_string(),
        })
    );
    let reply = reply_of(RPC_TTL, &Request::Ttl(key), &Ok(ResponseBody::Ttl(-1)));
    assert!(matches!(
        reply.result,
        Some(ReplyResult::Ttl {
            error: 0,
            ttl_seconds: -1,
            ..
        })
    ));

    let full = Request::GetScanner(ScanRequest::new(ScanRange::Full));
    let reply = reply_of(
        RPC_GET_SCANNER,
        &full,
        &Ok(ResponseBody::Scan {
            records: records(),
            count: 2,
            context_id: 9,
        }),
    );
    let Some(ReplyResult::Scan {
        error: 0,
        kvs,
        context_id: 9,
        kv_count: None,
        ..
    }) = reply.result
    else {
        panic!("{:?}", reply.result);
    };
    assert_eq!(kvs[0], (b"\x00\x02h1s1".to_vec(), b"v1".to_vec()));
    assert_eq!(kvs[1], (b"\x00\x00only".to_vec(), Vec::new()));

    let reply = reply_of(
        RPC_SCAN,
        &Request::Scan { context_id: 9 },
        &Ok(ResponseBody::Scan {
            records: Vec::new(),
            count: 31,
            context_id: -1,
        }),
    );
    assert!(matches!(
        reply.result,
        Some(ReplyResult::Scan {
            kv_count: Some(31),
            context_id: -1,
            ..
        })
    ));
    let reply = reply_of(
        RPC_SCAN,
        &Request::Scan { context_id: 9 },
        &Err(OpError::new(ErrorCode::ScannerNotFound, "gone")),
    );
    assert!(matches!(
        reply.result,
        Some(ReplyResult::Scan {
            error: 1,
            context_id: SCAN_CONTEXT_NOT_EXIST,
            kv_count: None,
            ..
        })
    ));
    let reply = reply_of(
        RPC_GET_SCANNER,
        &full,
        &Err(OpError::new(ErrorCode::InvalidArgument, "bad")),
    );
    assert!(matches!(
        reply.result,
        Some(ReplyResult::Scan {
            error: 4,
            context_id: SCAN_CONTEXT_COMPLETE,
            ..
        })
    ));
}

#[test]
fn rpc_level_errors_carry_no_result() {
    // Proves an RPC-level failure is a reply with only the error name and message header,
    // clear_scanner is never answered, an unknown name is ERR_HANDLER_NOT_FOUND and a body
    // that does not fit its RPC is ERR_UNKNOWN.
    let request = Request::Get(Key::new("h", "s"));
    let reply = reply_of(
        RPC_GET,
        &request,
        &Err(OpError::new(ErrorCode::NotPrimary, "lease")),
    );
    assert_eq!(reply.error_name, "ERR_INVALID_STATE");
    assert_eq!(reply.result, None);
    assert_eq!(
        reply_to_response(&request, &reply).unwrap_err().code,
        ErrorCode::NotPrimary
    );
    for response in [
        Ok(ResponseBody::Done),
        Err(OpError::new(ErrorCode::Busy, "x")),
    ] {
        let clear = Request::ClearScanner { context_id: 1 };
        assert_eq!(
            encode_data_reply(RPC_CLEAR_SCANNER, 1, &clear, &response, &context()),
            None
        );
    }
    let unknown = encode_data_reply("RPC_NOPE", 5, &request, &Ok(ResponseBody::Done), &context());
    let unknown = decode_reply(&unknown.unwrap()).unwrap();
    assert_eq!(
        (
            unknown.error_name.as_str(),
            unknown.name.as_str(),
            unknown.result
        ),
        ("ERR_HANDLER_NOT_FOUND", "RPC_NOPE_ACK", None)
    );
    let mismatch = reply_of(RPC_GET, &request, &Ok(ResponseBody::Done));
    assert_eq!(mismatch.error_name, ERR_UNKNOWN);
}

#[test]
fn meta_replies_round_trip() {
    // Proves query-config and list-apps replies decode with every field: gpids, addresses
    // (none as 0), defaulted app_info fields and envs.
    let primary = "10.0.0.1:34801".parse().unwrap();
    let secondary = "10.0.0.2:34802".parse().unwrap();
    let reply = QueryConfigReply {
        err: "ERR_OK",
        app_id: 3,
        partition_count: 2,
        partitions: vec![
            PartitionConfiguration {
                app_id: 3,
                partition_index: 0,
                ballot: 5,
                max_replica_count: 3,
                primary: Some(primary),
                secondaries: vec![secondary],
                last_committed_decree: 99,
            },
            PartitionConfiguration {
                app_id: 3,
                partition_index: 1,
                ballot: -1,
                max_replica_count: 3,
                primary: None,
                secondaries: Vec::new(),
                last_committed_decree: 0,
            },
        ],
    };
    let decoded = decode_reply(&encode_query_config_reply(8, &reply)).unwrap();
    assert_eq!(decoded.name, "RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX_ACK");
    let Some(ReplyResult::QueryConfig(config)) = decoded.result else {
        panic!("{decoded:?}");
    };
    assert_eq!(
        (
            config.err.as_str(),
            config.app_id,
            config.partition_count,
            config.is_stateful
        ),
        ("ERR_OK", 3, 2, true)
    );
    assert_eq!(
        config.partitions[0],
        PartitionConfigurationResult {
            app_id: 3,
            partition_index: 0,
            ballot: 5,
            max_replica_count: 3,
            primary: Some(primary),
            secondaries: vec![secondary],
            last_drops: Vec::new(),
            last_committed_decree: 99,
            partition_flags: 0,
        }
    );
    assert_eq!(config.partitions[1].primary, None);
    assert_eq!(config.partitions[1].ballot, -1);

    let apps = [
        AppInfo {
            app_id: 1,
            app_name: "temp".to_string(),
            partition_count: 8,
            max_replica_count: 3,
            available: true,
            envs: vec![("k".to_string(), "v".to_string())],
        },
        AppInfo {
            app_id: 2,
            app_name: "gone".to_string(),
            available: false,
            ..AppInfo::default()
        },
    ];
    let decoded = decode_reply(&encode_list_apps_reply(9, "ERR_OK", &apps)).unwrap();
    let Some(ReplyResult::ListApps { err, apps }) = decoded.result else {
        panic!("{decoded:?}");
    };
    assert_eq!(err, "ERR_OK");
    assert_eq!(
        apps[0],
        AppInfoResult {
            status: APP_STATUS_AVAILABLE,
            app_type: "pegasus".to_string(),
            app_name: "temp".to_string(),
            app_id: 1,
            partition_count: 8,
            envs: vec![("k".to_string(), "v".to_string())],
            is_stateful: true,
            max_replica_count: 3,
            expire_second: 0,
            create_second: 0,
            drop_second: 0,
            duplicating: None,
            init_partition_count: 8,
            is_bulk_loading: None,
            atomic_idempotent: None,
        }
    );
    assert_eq!(apps[1].status, APP_STATUS_DROPPED);
}

#[test]
fn placeholder_encodings_match_rdsn() {
    // Proves gpid puts the app id in the low word and rpc_address is ip<<32 | port<<16 | 1.
    assert_eq!(gpid_of(3, 5), (5i64 << 32) | 3);
    assert_eq!(parts_of_gpid(gpid_of(-1, 7)), (-1, 7));
    let address = "127.0.0.1:34601".parse().unwrap();
    assert_eq!(
        rpc_address_of(Some(address)),
        (0x7F00_0001u64 << 32) | (34601 << 16) | 1
    );
    assert_eq!(rpc_address_of(None), 0);
    assert_eq!(
        socket_address_of(rpc_address_of(Some(address))),
        Some(address)
    );
    assert_eq!(socket_address_of(0), None);
    assert_eq!(socket_address_of(2), None);
}
