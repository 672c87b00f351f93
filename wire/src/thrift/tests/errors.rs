//! Error mapping: Markab's codes to rDSN names and storage codes, and calls
//! the server must refuse.

use super::*;
use crate::message::ErrorCode;

#[test]
fn every_code_has_a_mapping_and_rpc_names_map_back() {
    // Proves the documented table for every ErrorCode, and that each RPC-level name maps back
    // to a code that maps to it again.
    use RpcErrorMapping::{Rpc, Storage};
    let expected = |code: ErrorCode| match code {
        ErrorCode::Ok => Storage(0),
        ErrorCode::NotFound | ErrorCode::ScannerNotFound => Storage(1),
        ErrorCode::InvalidArgument => Storage(4),
        ErrorCode::StorageError | ErrorCode::Internal => Storage(5),
        ErrorCode::UnknownOutcome => Storage(9),
        ErrorCode::UnknownTable
        | ErrorCode::UnknownPartition
        | ErrorCode::WrongShard
        | ErrorCode::NotHosted => Rpc("ERR_OBJECT_NOT_FOUND"),
        ErrorCode::NotPrimary | ErrorCode::StaleBallot | ErrorCode::ShuttingDown => {
            Rpc("ERR_INVALID_STATE")
        }
        ErrorCode::NotEnoughReplicas | ErrorCode::NotEnoughNodes => Rpc("ERR_NOT_ENOUGH_MEMBER"),
        ErrorCode::Busy => Rpc("ERR_BUSY"),
        ErrorCode::RequestTooLarge | ErrorCode::BadFrame => Rpc("ERR_INVALID_DATA"),
        ErrorCode::UnknownKind => Rpc("ERR_HANDLER_NOT_FOUND"),
        ErrorCode::Timeout => Rpc("ERR_TIMEOUT"),
        ErrorCode::Splitting => Rpc("ERR_SPLITTING"),
        ErrorCode::StaleRoute | ErrorCode::WrongPartition => Rpc("ERR_PARENT_PARTITION_MISUSED"),
        ErrorCode::TableExists => Rpc("ERR_APP_EXIST"),
        ErrorCode::NotLeader => Rpc("ERR_FORWARD_TO_OTHERS"),
    };
    for code in ErrorCode::ALL {
        let mapping = rdsn_error(code);
        assert_eq!(mapping, expected(code), "{code}");
        match mapping {
            Rpc(name) => assert_eq!(rdsn_error(error_code_of_rdsn(name)), Rpc(name), "{code}"),
            Storage(error) => assert_eq!(
                rdsn_error(error_code_of_storage(error)),
                Storage(error),
                "{code}"
            ),
        }
    }
    assert_eq!(error_code_of_rdsn("ERR_SOMETHING_NEW"), ErrorCode::Internal);
}

fn call_body(name: &str, args: &[u8]) -> Vec<u8> {
    let mut body = (0x8001_0001u32 as i32).to_be_bytes().to_vec();
    body.extend_from_slice(&(name.len() as i32).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&99i32.to_be_bytes());
    body.extend_from_slice(args);
    body
}

fn blob_arg(blob: &[u8]) -> Vec<u8> {
    let mut args = vec![12, 0, 1];
    args.extend_from_slice(&(blob.len() as i32).to_be_bytes());
    args.extend_from_slice(blob);
    args.push(0);
    args
}

#[test]
fn unknown_names_and_bad_args_are_answerable() {
    // Proves an unknown RPC is ERR_HANDLER_NOT_FOUND and bad args ERR_INVALID_PARAMETERS, both
    // with the call's name and seqid so the server can reply.
    let error =
        decode_call(&call_body("RPC_RRDB_RRDB_NOPE", &blob_arg(b"\x00\x00")), 0).unwrap_err();
    assert_eq!(
        (error.name.as_deref(), error.seqid, error.error_name),
        (Some("RPC_RRDB_RRDB_NOPE"), 99, "ERR_HANDLER_NOT_FOUND")
    );
    let invalid = |body: Vec<u8>| {
        let error = decode_call(&body, 0).unwrap_err();
        assert_eq!(error.error_name, "ERR_INVALID_PARAMETERS", "{error}");
        assert_eq!(error.seqid, 99);
        assert!(error.name.is_some());
    };
    // Key blobs too short, or whose hash-key length overruns them.
    invalid(call_body(RPC_GET, &blob_arg(b"")));
    invalid(call_body(RPC_GET, &blob_arg(b"\x00")));
    invalid(call_body(RPC_TTL, &blob_arg(b"\x00\x05abc")));
    // No argument at all, an argument of the wrong type, a missing STOP.
    invalid(call_body(RPC_GET, &[0]));
    invalid(call_body(RPC_GET, &[8, 0, 1, 0, 0, 0, 1, 0]));
    invalid(call_body(RPC_GET, &blob_arg(b"\x00\x00")[..9]));
    // A put without its key; a clear_scanner whose context is not an i64.
    invalid(call_body(RPC_PUT, &[12, 0, 1, 8, 0, 3, 0, 0, 0, 1, 0, 0]));
    invalid(call_body(RPC_CLEAR_SCANNER, &blob_arg(b"\x00\x00")));
}

#[test]
fn unknown_enum_values_are_refused() {
    // Proves a check type, filter type or mutate operation outside Pegasus's enums is refused
    // with ERR_INVALID_PARAMETERS (the encoder never writes one; bytes are patched).
    let patch_i32_field = |request: Request, field: [u8; 3], value: i32| {
        let (_, mut body) = encode_data_call(1, &request, 0).unwrap();
        let at = body.windows(3).position(|w| w == field).unwrap();
        body[at + 3..at + 7].copy_from_slice(&value.to_be_bytes());
        let error = decode_call(&body, 0).unwrap_err();
        assert_eq!(error.error_name, "ERR_INVALID_PARAMETERS", "{error}");
    };
    let cas = CheckAndSetRequest {
        hash_key: b"h".to_vec(),
        check_sort_key: b"c".to_vec(),
        check_type: CheckType::ValueExist,
        check_operand: Vec::new(),
        set_sort_key: b"c".to_vec(),
        set_value: Vec::new(),
        set_ttl_seconds: 0,
        return_check_value: false,
    };
    patch_i32_field(Request::CheckAndSet(cas), [8, 0, 3], 18);
    let mut get = MultiGetRequest::range("hk");
    get.sort_key_filter = Filter::new(FilterType::MatchPrefix, "p");
    patch_i32_field(Request::MultiGet(get), [8, 0, 10], -1);
    let mut scan = ScanRequest::new(ScanRange::Full);
    scan.hash_key_filter = Filter::new(FilterType::MatchPrefix, "p");
    patch_i32_field(Request::GetScanner(scan), [8, 0, 7], 4);
    let cam = CheckAndMutateRequest {
        hash_key: b"h".to_vec(),
        check_sort_key: b"c".to_vec(),
        check_type: CheckType::NoCheck,
        check_operand: Vec::new(),
        mutations: vec![Mutation::Delete {
            sort_key: b"d".to_vec(),
        }],
        return_check_value: false,
    };
    patch_i32_field(Request::CheckAndMutate(cam), [8, 0, 1], 2);
}

#[test]
fn unreadable_headers_close_the_connection() {
    // Proves a body whose message header cannot be read, is not a call, or names an RPC in
    // bytes that are not UTF-8 gives no name: the server must close.
    for body in [
        Vec::new(),
        vec![0x80, 0x01, 0x00, 0x01, 0, 0],
        {
            let mut reply = Vec::new();
            reply.extend_from_slice(&(0x8001_0002u32 as i32).to_be_bytes());
            reply.extend_from_slice(&3i32.to_be_bytes());
            reply.extend_from_slice(b"RPC");
            reply.extend_from_slice(&1i32.to_be_bytes());
            reply
        },
        {
            let mut bad = (0x8001_0001u32 as i32).to_be_bytes().to_vec();
            bad.extend_from_slice(&2i32.to_be_bytes());
            bad.extend_from_slice(&[0xC3, 0x28]);
            bad.extend_from_slice(&1i32.to_be_bytes());
            bad
        },
    ] {
        let error = decode_call(&body, 0).unwrap_err();
        assert_eq!(error.name, None, "{error}");
        assert_eq!(peek_call(&body), None);
    }
}

#[test]
fn every_answerable_name_has_a_decodable_reply() {
    // Proves a call name just within the bound gets an error reply a client can decode, and
    // one whose reply name would not fit is treated as unreadable.
    let longest = "R".repeat(MESSAGE_NAME_BYTES_MAX - REPLY_NAME_SUFFIX.len());
    let error = decode_call(&call_body(&longest, &blob_arg(b"\x00\x00")), 0).unwrap_err();
    let name = error.name.unwrap();
    let reply = decode_reply(&encode_error_reply(&name, error.seqid, error.error_name)).unwrap();
    assert_eq!(reply.name, format!("{longest}_ACK"));
    let longer = format!("{longest}R");
    let error = decode_call(&call_body(&longer, &blob_arg(b"\x00\x00")), 0).unwrap_err();
    assert_eq!(error.name, None);
}

#[test]
fn extra_args_fields_are_skipped_and_the_first_field_wins_whatever_its_id() {
    // Proves the args struct's first field is the request even under another id, and later
    // fields (here a nested struct and a list) are skipped.
    let mut args = vec![12, 0, 7];
    args.extend_from_slice(&4i32.to_be_bytes());
    args.extend_from_slice(b"\x00\x01hs");
    args.extend_from_slice(&[12, 0, 2, 8, 0, 1, 0, 0, 0, 5, 0]);
    args.extend_from_slice(&[15, 0, 3, 11, 0, 0, 0, 1, 0, 0, 0, 1, b'x']);
    args.push(0);
    let call = decode_call(&call_body(RPC_GET, &args), 0).unwrap();
    assert_eq!(call.rpc, Rpc::Data(Request::Get(Key::new("h", "s"))));
}
