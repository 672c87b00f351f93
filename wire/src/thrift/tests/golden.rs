//! Byte-exact checks against pypegasus3 0.0.1.1, the Python client.
//!
//! The request frames below were written by pypegasus's own code: its
//! operators (`pypegasus.operate.packet.Rrdb*Operator.send_data`, its
//! `ThriftHeader`) over thrift 0.13's `TBinaryProtocol`, as its sessions send
//! them. Regenerate with `/tmp/pegvenv/bin/python gen.py`, where gen.py is:
//!
//! ```text
//! from thrift.transport import TTransport
//! from thrift.protocol import TBinaryProtocol
//! from pypegasus.operate.packet import *
//! from pypegasus.base.ttypes import blob, gpid
//! from pypegasus.rrdb.ttypes import *
//! from pypegasus.replication.ttypes import query_cfg_request
//! from pypegasus.pgclient import Pegasus
//! def frame(op, seqid):
//!     buf = TTransport.TMemoryBuffer()
//!     op.send_data(TBinaryProtocol.TBinaryProtocolFactory().getProtocol(buf), seqid)
//!     body = buf.getvalue()
//!     return bytes(op.prepare_thrift_header(len(body))) + body
//! key = Pegasus.generate_key(b"hk", b"sk")
//! print(frame(RrdbGetOperator(gpid(3, 5), key), 7).hex())
//! print(frame(RrdbPutOperator(gpid(3, 5), update_request(key, blob(b"value"), 1060)), 8).hex())
//! print(frame(RrdbMultiGetOperator(gpid(3, 1), multi_get_request(blob(b"hk"),
//!     [blob(b"a"), blob(b"b")], 100, 1000000, False)), 9).hex())
//! print(frame(RrdbGetScannerOperator(gpid(3, 2), get_scanner_request(
//!     Pegasus.generate_key(b"hk", b"a"), Pegasus.generate_key(b"hk", b"z"), True, False, 1000)), 10).hex())
//! print(frame(RrdbGetScannerOperator(gpid(3, 2), get_scanner_request(
//!     blob('\x00\x00'), blob('\xFF\xFF'), True, False, 1000)), 11).hex())
//! print(frame(QueryCfgOperator(gpid(0, 0), query_cfg_request("temp", [])), 1).hex())
//! print(frame(RrdbClearScannerOperator(gpid(3, 2), 42), 12).hex())
//! print(frame(RrdbTtlOperator(gpid(3, 5), key), 13).hex())
//! ```
//!
//! The reply frames below are what Markab writes; each was fed to
//! pypegasus's receive path — `TPegasusThriftClientProtocol.dataReceived`
//! (in two pieces) into a `ReplicaSession` / `MetaSession` whose
//! `recv_*_ACK` runs the operator's `parse_result` — which gave: get
//! `(0, b'value')`; get of a missing key `(23, b'')` (its ERR_OBJECT_NOT_FOUND
//! for storage error 1); ttl `(0, 60)`; put `(0, None)`; multi_get
//! `(0, {b'a': b'1', b'b': b'2'})`; get_scanner `{'error': 0, 'context_id':
//! -1, 'kvs': [key_value(key=blob(data=b'\x00\x02hka'), value=blob(data=b'1'))]}`;
//! an ERR_INVALID_STATE reply `error_types.ERR_INVALID_STATE` (after
//! `update_state`); and the query-config reply a `query_cfg_response` with
//! both partitions, gpids, primaries and secondaries as written.

use super::*;
use crate::message::{ErrorCode, OpError, Record, Response, ResponseBody};

fn bytes_of(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect()
}

/// The v0 header pypegasus sends for a gpid: no timeout, no partition hash.
fn pypegasus_header(app_id: i32, partition_index: i32) -> RequestHeader {
    RequestHeader {
        version: 0,
        app_id,
        partition_index,
        ..RequestHeader::default()
    }
}

/// Decodes a whole pypegasus frame: its header, then its call.
fn decode_frame(hex: &str, now: u32) -> (RequestHeader, Call) {
    let mut decoder = ThftDecoder::new(THFT_BODY_BYTES_MAX);
    decoder.extend(&bytes_of(hex));
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(decoder.buffered_bytes(), 0);
    (frame.header, decode_call(&frame.body, now).unwrap())
}

const GET: &str = concat!(
    "544846540000000000000030000000000000002b0000000000000003000000050000000000005cd200000000",
    "0000000080010001000000115250435f525244425f525244425f474554000000070c0001000000060002686b",
    "736b00",
);
const PUT: &str = concat!(
    "54484654000000000000003000000000000000420000000000000003000000050000000000005cd200000000",
    "0000000080010001000000115250435f525244425f525244425f505554000000080c00010c00010000000600",
    "02686b736b0c00020000000576616c7565080003000004240000",
);
const MULTI_GET: &str = concat!(
    "54484654000000000000003000000000000000550000000000000003000000010000000000005cce00000000",
    "0000000080010001000000175250435f525244425f525244425f4d554c54495f474554000000090c00010c00",
    "0100000002686b0f00020c000000020000000161000000016208000300000064080004000f42400200050000",
    "00",
);
const GET_SCANNER: &str = concat!(
    "54484654000000000000003000000000000000510000000000000003000000020000000000005ccf00000000",
    "0000000080010001000000195250435f525244425f525244425f4745545f5343414e4e45520000000a0c0001",
    "0c0001000000050002686b610c0002000000050002686b7a0200030102000400080005000003e80000",
);
const UNORDERED_SCANNER: &str = concat!(
    "544846540000000000000030000000000000004d0000000000000003000000020000000000005ccf00000000",
    "0000000080010001000000195250435f525244425f525244425f4745545f5343414e4e45520000000b0c0001",
    "0c00010000000200000c000200000004c3bfc3bf0200030102000400080005000003e80000",
);
const QUERY_CONFIG: &str = concat!(
    "544846540000000000000030000000000000004a000000000000000000000000000000000000000000000000",
    "0000000080010001000000265250435f434d5f51554552595f504152544954494f4e5f434f4e4649475f4259",
    "5f494e444558000000010c00010b00010000000474656d700f000208000000000000",
);
const CLEAR_SCANNER: &str = concat!(
    "54484654000000000000003000000000000000330000000000000003000000020000000000005ccf00000000",
    "00000000800100010000001b5250435f525244425f525244425f434c4541525f5343414e4e45520000000c0a",
    "0001000000000000002a00",
);
const TTL: &str = concat!(
    "544846540000000000000030000000000000002b0000000000000003000000050000000000005cd200000000",
    "0000000080010001000000115250435f525244425f525244425f54544c0000000d0c0001000000060002686b",
    "736b00",
);

#[test]
fn markab_writes_the_bytes_pypegasus_writes() {
    // Proves the client encoder matches pypegasus byte for byte where pypegasus writes every
    // field: get, put with a TTL (expire 1060 at now 1000), ttl, clear_scanner, query config.
    let key = Key::new("hk", "sk");
    let frame = |header: RequestHeader, seqid: i32, request: Request, now: u32| {
        let (_, body) = encode_data_call(seqid, &request, now).unwrap();
        encode_request_frame(&header, &body)
    };
    assert_eq!(
        frame(pypegasus_header(3, 5), 7, Request::Get(key.clone()), 0),
        bytes_of(GET)
    );
    let put = Request::Set {
        key: key.clone(),
        value: b"value".to_vec(),
        ttl_seconds: 60,
    };
    assert_eq!(frame(pypegasus_header(3, 5), 8, put, 1000), bytes_of(PUT));
    assert_eq!(
        frame(pypegasus_header(3, 5), 13, Request::Ttl(key), 0),
        bytes_of(TTL)
    );
    let clear = Request::ClearScanner { context_id: 42 };
    assert_eq!(
        frame(pypegasus_header(3, 2), 12, clear, 0),
        bytes_of(CLEAR_SCANNER)
    );
    assert_eq!(
        encode_request_frame(
            &RequestHeader::default(),
            &encode_query_config_call(1, "temp")
        ),
        bytes_of(QUERY_CONFIG)
    );
}

#[test]
fn pypegasus_frames_decode_to_markab_requests() {
    // Proves every pypegasus frame decodes: header gpid, name, seqid and the request — the put
    // TTL made relative, the multi_get with only fields 1-5 defaulted like Pegasus's C++ reader,
    // the hash-key scan as a hash scan, the unordered scanner's range as a full scan.
    let key = Key::new("hk", "sk");
    let (header, call) = decode_frame(GET, 0);
    assert_eq!(header, pypegasus_header(3, 5));
    assert_eq!((call.name, call.seqid), (RPC_GET, 7));
    assert_eq!(call.rpc, Rpc::Data(Request::Get(key.clone())));

    let (_, call) = decode_frame(PUT, 1000);
    assert_eq!(
        call.rpc,
        Rpc::Data(Request::Set {
            key: key.clone(),
            value: b"value".to_vec(),
            ttl_seconds: 60,
        })
    );
    let (_, late) = decode_frame(PUT, 2000);
    assert!(matches!(
        late.rpc,
        Rpc::Data(Request::Set { ttl_seconds: 1, .. })
    ));

    let (header, call) = decode_frame(MULTI_GET, 0);
    assert_eq!(header, pypegasus_header(3, 1));
    let expected = MultiGetRequest {
        hash_key: b"hk".to_vec(),
        sort_keys: vec![b"a".to_vec(), b"b".to_vec()],
        max_kv_count: 100,
        max_kv_size: 1_000_000,
        no_value: false,
        start_sort_key: Vec::new(),
        stop_sort_key: Vec::new(),
        start_inclusive: false,
        stop_inclusive: false,
        sort_key_filter: Filter::none(),
        reverse: false,
    };
    assert_eq!(
        (call.seqid, call.rpc),
        (9, Rpc::Data(Request::MultiGet(expected)))
    );

    let scan = |range| ScanRequest {
        range,
        start_inclusive: true,
        stop_inclusive: false,
        hash_key_filter: Filter::none(),
        sort_key_filter: Filter::none(),
        batch_size: 1000,
        no_value: false,
        only_return_count: false,
    };
    let (_, call) = decode_frame(GET_SCANNER, 0);
    let hash = ScanRange::Hash {
        hash_key: b"hk".to_vec(),
        start_sort_key: b"a".to_vec(),
        stop_sort_key: b"z".to_vec(),
    };
    assert_eq!(call.rpc, Rpc::Data(Request::GetScanner(scan(hash))));
    let (_, call) = decode_frame(UNORDERED_SCANNER, 0);
    assert_eq!(
        call.rpc,
        Rpc::Data(Request::GetScanner(scan(ScanRange::Full)))
    );

    let (header, call) = decode_frame(QUERY_CONFIG, 0);
    assert_eq!(header, RequestHeader::default());
    assert_eq!(
        (call.name, call.seqid, call.rpc),
        (
            RPC_QUERY_CONFIG,
            1,
            Rpc::QueryConfig {
                app_name: "temp".to_string(),
                partition_indices: Vec::new(),
            }
        )
    );
    let (_, call) = decode_frame(CLEAR_SCANNER, 0);
    assert_eq!(
        call.rpc,
        Rpc::Data(Request::ClearScanner { context_id: 42 })
    );
    let (_, call) = decode_frame(TTL, 0);
    assert_eq!((call.seqid, call.rpc), (13, Rpc::Data(Request::Ttl(key))));
}

/// Call bodies written by an encoder that is not Markab's, with `now` 1000:
/// pypegasus's generated `*_args` structs (multi_get with every field,
/// multi_put, multi_remove, sortkey_count, remove, scan, get_scanner with
/// fields 1-10), and, for what pypegasus lacks (incr, check_and_set,
/// check_and_mutate, batch_get, get_scanner fields 13-14), thrift's
/// `TBinaryProtocol` driven field by field from Pegasus's `idl/rrdb.thrift`.
/// Written by `/tmp/pegvenv/bin/python gen2.py`; for example its incr:
///
/// ```text
/// def incr(p):
///     blob_field(p, 1, b"\x00\x02hksk"); i64(p, 2, -5); i32(p, 3, 1000 + 10)
/// out["incr"] = call("RPC_RRDB_RRDB_INCR", 29, args_struct(incr))
/// ```
fn independent_bodies() -> Vec<(i32, Request, &'static str)> {
    let kv = |sort_key: &str, value: &str| SortKeyValue {
        sort_key: sort_key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    vec![
        (
            21,
            Request::MultiGet(multi_get_everything()),
            concat!(
                "80010001000000175250435f525244425f525244425f4d554c54495f474554000000150c00010c0001000000",
                "067573657200ff0f00020c000000000800030000001108000400001000020005010c000600000001610c0007",
                "000000016d020008000200090108000a000000030c000b000000017802000c010000",
            ),
        ),
        (
            22,
            Request::MultiSet {
                hash_key: b"hk".to_vec(),
                kvs: vec![kv("a", "1"), kv("", "")],
                ttl_seconds: 3600,
            },
            concat!(
                "80010001000000175250435f525244425f525244425f4d554c54495f505554000000160c00010c0001000000",
                "02686b0f00020c000000020c000100000001610c00020000000131000c0001000000000c0002000000000008",
                "0003000011f80000",
            ),
        ),
        (
            23,
            Request::MultiDel {
                hash_key: b"hk".to_vec(),
                sort_keys: vec![b"a".to_vec(), b"b".to_vec()],
            },
            concat!(
                "800100010000001a5250435f525244425f525244425f4d554c54495f52454d4f5645000000170c00010c0001",
                "00000002686b0f00020c00000002000000016100000001620a000300000000000000000000",
            ),
        ),
        (
            24,
            Request::SortKeyCount {
                hash_key: b"hk".to_vec(),
            },
            concat!(
                "800100010000001b5250435f525244425f525244425f534f52544b45595f434f554e54000000180c00010000",
                "0002686b00",
            ),
        ),
        (
            25,
            Request::Del(Key::new("hk", "sk")),
            concat!(
                "80010001000000145250435f525244425f525244425f52454d4f5645000000190c0001000000060002686b73",
                "6b00",
            ),
        ),
        (
            26,
            Request::Scan { context_id: 7 },
            concat!(
                "80010001000000125250435f525244425f525244425f5343414e0000001a0c00010a00010000000000000007",
                "0000",
            ),
        ),
        (
            27,
            Request::GetScanner(ScanRequest {
                range: ScanRange::Hash {
                    hash_key: b"hk".to_vec(),
                    start_sort_key: b"a".to_vec(),
                    stop_sort_key: b"z".to_vec(),
                },
                start_inclusive: true,
                stop_inclusive: false,
                hash_key_filter: Filter::new(FilterType::MatchPrefix, "h"),
                sort_key_filter: Filter::new(FilterType::MatchAnywhere, "s"),
                batch_size: 250,
                no_value: true,
                only_return_count: false,
            }),
            concat!(
                "80010001000000195250435f525244425f525244425f4745545f5343414e4e45520000001b0c00010c000100",
                "0000050002686b610c0002000000050002686b7a0200030102000400080005000000fa020006010800070000",
                "00020c00080000000168080009000000010c000a00000001730000",
            ),
        ),
        (
            28,
            Request::GetScanner(ScanRequest {
                range: ScanRange::Full,
                start_inclusive: true,
                stop_inclusive: false,
                hash_key_filter: Filter::none(),
                sort_key_filter: Filter::none(),
                batch_size: 250,
                no_value: false,
                only_return_count: true,
            }),
            concat!(
                "80010001000000195250435f525244425f525244425f4745545f5343414e4e45520000001c0c00010c000100",
                "00000200000c000200000002ffff0200030102000400080005000000fa02000600080007000000000c000800",
                "000000080009000000000c000a0000000002000d0102000e010000",
            ),
        ),
        (
            29,
            Request::Incr {
                key: Key::new("hk", "sk"),
                increment: -5,
                ttl_seconds: 10,
            },
            concat!(
                "80010001000000125250435f525244425f525244425f494e43520000001d0c00010c0001000000060002686b",
                "736b0a0002fffffffffffffffb080003000003f20000",
            ),
        ),
        (
            30,
            Request::CheckAndSet(CheckAndSetRequest {
                hash_key: b"hk".to_vec(),
                check_sort_key: b"c".to_vec(),
                check_type: CheckType::ValueIntGreater,
                check_operand: b"10".to_vec(),
                set_sort_key: b"other".to_vec(),
                set_value: b"11".to_vec(),
                set_ttl_seconds: 600,
                return_check_value: true,
            }),
            concat!(
                "800100010000001b5250435f525244425f525244425f434845434b5f414e445f5345540000001e0c00010c00",
                "0100000002686b0c00020000000163080003000000110c0004000000023130020005010c0006000000056f74",
                "6865720c000700000002313108000800000640020009010000",
            ),
        ),
        (
            31,
            Request::CheckAndMutate(CheckAndMutateRequest {
                hash_key: b"hk".to_vec(),
                check_sort_key: b"c".to_vec(),
                check_type: CheckType::ValueBytesEqual,
                check_operand: b"x".to_vec(),
                mutations: vec![
                    Mutation::Put {
                        sort_key: b"p".to_vec(),
                        value: b"pv".to_vec(),
                        ttl_seconds: 30,
                    },
                    Mutation::Delete {
                        sort_key: b"d".to_vec(),
                    },
                ],
                return_check_value: false,
            }),
            concat!(
                "800100010000001e5250435f525244425f525244425f434845434b5f414e445f4d55544154450000001f0c00",
                "010c000100000002686b0c000200000001630800030000000a0c000400000001780f00050c00000002080001",
                "000000000c000200000001700c00030000000270760800040000040600080001000000010c00020000000164",
                "0c0003000000000800040000000000020006000000",
            ),
        ),
        (
            32,
            Request::BatchGet {
                keys: vec![Key::new("hk", "sk"), Key::new("", "x")],
            },
            concat!(
                "80010001000000175250435f525244425f525244425f42415443485f474554000000200c00010f00010c0000",
                "00020c000100000002686b0c000200000002736b000c0001000000000c00020000000178000000",
            ),
        ),
    ]
}

#[test]
fn every_struct_matches_an_independent_encoder() {
    // Proves, for every request struct, field ids, types and order against bytes Markab did
    // not write: Markab's encoder writes them exactly and its decoder reads them back.
    for (seqid, request, hex) in independent_bodies() {
        let (name, body) = encode_data_call(seqid, &request, 1000).unwrap();
        assert_eq!(body, bytes_of(hex), "{name}");
        let call = decode_call(&bytes_of(hex), 1000).unwrap();
        assert_eq!(
            (call.seqid, call.rpc),
            (seqid, Rpc::Data(request)),
            "{name}"
        );
    }
}

const SERVER: &str = "127.0.0.1:34801";

/// The replies checked with pypegasus's reader (module documentation).
fn replies() -> Vec<(&'static str, i32, Request, Response, &'static str)> {
    let key = Key::new("hk", "sk");
    let kv = |sort_key: &str, value: &str| SortKeyValue {
        sort_key: sort_key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    let record = Record {
        hash_key: b"hk".to_vec(),
        sort_key: b"a".to_vec(),
        value: b"1".to_vec(),
    };
    vec![
        (RPC_GET, 7, Request::Get(key.clone()), Ok(ResponseBody::Value(b"value".to_vec())), concat!(
                "0000006b000000064552525f4f4b80010002000000155250435f525244425f525244425f4745545f41434b00",
                "0000070c0000080001000000000c00020000000576616c756508000300000003080004000000050b00060000",
                "000f3132372e302e302e313a33343830310000",
            )),
        (RPC_GET, 8, Request::Get(key.clone()), Err(OpError::new(ErrorCode::NotFound, "x")), concat!(
                "00000066000000064552525f4f4b80010002000000155250435f525244425f525244425f4745545f41434b00",
                "0000080c0000080001000000010c00020000000008000300000003080004000000050b00060000000f313237",
                "2e302e302e313a33343830310000",
            )),
        (RPC_TTL, 9, Request::Ttl(key.clone()), Ok(ResponseBody::Ttl(60)), concat!(
                "00000066000000064552525f4f4b80010002000000155250435f525244425f525244425f54544c5f41434b00",
                "0000090c0000080001000000000800020000003c08000300000003080004000000050b00060000000f313237",
                "2e302e302e313a33343830310000",
            )),
        (
            RPC_PUT,
            10,
            Request::Set {
                key: key.clone(),
                value: b"v".to_vec(),
                ttl_seconds: 0,
            },
            Ok(ResponseBody::Done),
            concat!(
                "0000006a000000064552525f4f4b80010002000000155250435f525244425f525244425f5055545f41434b00",
                "00000a0c00000800010000000008000200000003080003000000050a000400000000000000000b0005000000",
                "0f3132372e302e302e313a33343830310000",
            ),
        ),
        (
            RPC_MULTI_GET,
            11,
            Request::MultiGet(MultiGetRequest::range("hk")),
            Ok(ResponseBody::MultiGet {
                kvs: vec![kv("a", "1"), kv("b", "2")],
                incomplete: false,
            }),
            concat!(
                "0000008f000000064552525f4f4b800100020000001b5250435f525244425f525244425f4d554c54495f4745",
                "545f41434b0000000b0c0000080001000000000f00020c000000020c000100000001610c0002000000013100",
                "0c000100000001620c000200000001320008000300000003080004000000050b00060000000f3132372e302e",
                "302e313a33343830310000",
            ),
        ),
        (
            RPC_GET_SCANNER,
            12,
            Request::GetScanner(ScanRequest::new(ScanRange::Full)),
            Ok(ResponseBody::Scan {
                records: vec![record],
                count: 1,
                context_id: -1,
            }),
            concat!(
                "0000008f000000064552525f4f4b800100020000001d5250435f525244425f525244425f4745545f5343414e",
                "4e45525f41434b0000000c0c0000080001000000000f00020c000000010c0001000000050002686b610c0002",
                "0000000131000a0003ffffffffffffffff08000400000003080005000000050b00060000000f3132372e302e",
                "302e313a33343830310000",
            ),
        ),
        (RPC_GET, 13, Request::Get(key), Err(OpError::new(ErrorCode::NotPrimary, "x")), concat!(
                "0000003a000000114552525f494e56414c49445f535441544580010002000000155250435f525244425f5252",
                "44425f4745545f41434b0000000d",
            )),
    ]
}

const QUERY_CONFIG_REPLY: &str = concat!(
    "00000116000000064552525f4f4b800100020000002a5250435f434d5f51554552595f504152544954494f4e",
    "5f434f4e4649475f42595f494e4445585f41434b000000010c00000c0001000000064552525f4f4b08000200",
    "00000308000300000002020004010f00050c000000020c000100000000000000030a00020000000000000004",
    "080003000000030c00047f00000187f100010f00050c000000017f00000287f200010f00060c000000000a00",
    "07000000000000000a08000800000000000c000100000001000000030a000200000000000000040800030000",
    "00030c00047f00000187f100010f00050c000000017f00000287f200010f00060c000000000a000700000000",
    "0000000a08000800000000000000",
);

#[test]
fn replies_are_the_bytes_pypegasus_was_shown_to_read() {
    // Proves the server encoder still writes exactly the reply bytes that pypegasus's own
    // receive path parsed correctly (module documentation), data and query config.
    let context = ReplyContext {
        app_id: 3,
        partition_index: 5,
        server: SERVER,
    };
    for (name, seqid, request, response, hex) in replies() {
        let bytes = encode_data_reply(name, seqid, &request, &response, &context).unwrap();
        assert_eq!(bytes, bytes_of(hex), "{name} {seqid}");
    }
    let partition = |partition_index| PartitionConfiguration {
        app_id: 3,
        partition_index,
        ballot: 4,
        max_replica_count: 3,
        primary: Some(SERVER.parse().unwrap()),
        secondaries: vec!["127.0.0.2:34802".parse().unwrap()],
        last_committed_decree: 10,
    };
    let reply = QueryConfigReply {
        err: "ERR_OK",
        app_id: 3,
        partition_count: 2,
        partitions: vec![partition(0), partition(1)],
    };
    assert_eq!(
        encode_query_config_reply(1, &reply),
        bytes_of(QUERY_CONFIG_REPLY)
    );
}
