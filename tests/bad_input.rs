//! Bad input against a real node over raw sockets: malformed frames, bad
//! checksums, unknown kinds, oversized frames, undecodable bodies, unknown
//! tables and partitions, wrong partitions and invalid arguments each get a
//! typed error reply (and, for framing errors, a closed connection); the
//! node never panics and other connections are undisturbed. Also proves that
//! a request sent to the wrong shard is forwarded to the owner.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use markab::key;
use markab::wire::codec::{decode_response, Encoder};
use markab::wire::frame::{write_frame, MessageKind, FRAME_HEADER_BYTES};
use markab::wire::{Envelope, ErrorCode, Gpid, Key, Request, Response, ResponseBody};

const PARTITIONS: u32 = 8;

fn connect(address: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads one response frame; None if the peer closed the connection.
fn read_response(stream: &mut TcpStream) -> Option<(u64, Response)> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    if stream.read_exact(&mut header).is_err() {
        return None;
    }
    let length = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    Some(decode_response(&body).expect("the node's reply decodes"))
}

fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

fn envelope(request_id: u64, hash_key: &[u8], sort_key: &[u8]) -> Envelope {
    let partition_hash = key::partition_hash(hash_key, sort_key);
    Envelope {
        request_id,
        timeout_ms: 5000,
        gpid: Gpid {
            app_id: 1,
            partition_index: key::partition_index(partition_hash, PARTITIONS) as i32,
        },
        partition_hash,
        partition_count: 0,
    }
}

fn request_frame(envelope: &Envelope, request: &Request) -> Vec<u8> {
    let mut frame = Vec::new();
    Encoder::new()
        .request_frame(envelope, request, &mut frame)
        .unwrap();
    frame
}

fn error_code(response: &Response) -> ErrorCode {
    match response {
        Ok(body) => panic!("expected an error, got {body:?}"),
        Err(error) => error.code,
    }
}

// Each framing error gets a typed reply and a closed connection, while a
// connection opened before and after keeps working.
#[test]
fn framing_errors_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, PARTITIONS)]);
    let mut node = common::Node::start(&config);
    let address = node.addresses[0];
    let mut bystander = connect(address);

    let good = request_frame(&envelope(1, b"h", b"s"), &Request::Get(Key::new("h", "s")));
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_checksum = good.clone();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0x55;
    let mut unknown_kind = good.clone();
    unknown_kind[5] = 99;
    let mut oversized = good[..FRAME_HEADER_BYTES].to_vec();
    oversized[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut response_kind = Vec::new();
    write_frame(
        MessageKind::Response,
        &good[FRAME_HEADER_BYTES..],
        &mut response_kind,
    )
    .unwrap();
    let mut garbage_body = Vec::new();
    write_frame(
        MessageKind::Request,
        b"this is not a flatbuffer at all",
        &mut garbage_body,
    )
    .unwrap();

    let cases: [(&str, Vec<u8>, ErrorCode); 6] = [
        ("bad magic", bad_magic, ErrorCode::BadFrame),
        ("bad checksum", bad_checksum, ErrorCode::BadFrame),
        ("unknown kind", unknown_kind, ErrorCode::UnknownKind),
        ("oversized frame", oversized, ErrorCode::BadFrame),
        (
            "response frame sent to a node",
            response_kind,
            ErrorCode::UnknownKind,
        ),
        ("garbage flatbuffer", garbage_body, ErrorCode::BadFrame),
    ];
    for (name, bytes, expected) in cases {
        let mut stream = connect(address);
        stream.write_all(&bytes).unwrap();
        let (_, response) =
            read_response(&mut stream).unwrap_or_else(|| panic!("{name}: no reply"));
        assert_eq!(error_code(&response), expected, "{name}");
        assert!(closed(&mut stream), "{name}: connection should be closed");
    }

    // The bystander connection and a new one are still served.
    for stream in [&mut bystander, &mut connect(address)] {
        stream.write_all(&good).unwrap();
        let (id, response) = read_response(stream).unwrap();
        assert_eq!(id, 1);
        assert_eq!(error_code(&response), ErrorCode::NotFound);
    }
    assert!(node.is_running(), "the node survived every bad frame");
    assert!(node.terminate().success());
}

// Requests that decode but are wrong get a typed error and the connection
// stays open for the next request.
#[test]
fn request_errors_keep_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config_with(
        dir.path(),
        2,
        &[("temp", 1, PARTITIONS)],
        "request_bytes_max = 65536\n",
    );
    let node = common::Node::start(&config);
    let mut stream = connect(node.addresses[0]);
    let mut send = |envelope: Envelope, request: Request| -> Response {
        stream
            .write_all(&request_frame(&envelope, &request))
            .unwrap();
        let (id, response) = read_response(&mut stream).expect("connection stays open");
        assert_eq!(id, envelope.request_id);
        response
    };
    let get = Request::Get(Key::new("h", "s"));

    let mut unknown_table = envelope(10, b"h", b"s");
    unknown_table.gpid.app_id = 77;
    assert_eq!(
        error_code(&send(unknown_table, get.clone())),
        ErrorCode::UnknownTable
    );

    let mut unknown_partition = envelope(11, b"h", b"s");
    unknown_partition.gpid.partition_index = PARTITIONS as i32;
    assert_eq!(
        error_code(&send(unknown_partition, get.clone())),
        ErrorCode::UnknownPartition
    );

    let mut wrong_partition = envelope(12, b"h", b"s");
    wrong_partition.gpid.partition_index =
        (wrong_partition.gpid.partition_index + 1) % PARTITIONS as i32;
    assert_eq!(
        error_code(&send(wrong_partition, get.clone())),
        ErrorCode::WrongPartition
    );

    let long_hash_key = vec![b'h'; 70_000];
    let too_long = Request::Get(Key::new(long_hash_key.clone(), "s"));
    let response = send(envelope(13, &long_hash_key, b"s"), too_long);
    assert!(matches!(
        error_code(&response),
        ErrorCode::InvalidArgument | ErrorCode::RequestTooLarge
    ));

    let multi_set_empty = Request::MultiSet {
        hash_key: b"h".to_vec(),
        kvs: Vec::new(),
        ttl_seconds: 0,
    };
    assert_eq!(
        error_code(&send(envelope(14, b"h", b""), multi_set_empty)),
        ErrorCode::InvalidArgument
    );

    let big = Request::Set {
        key: Key::new("h", "s"),
        value: vec![7u8; 100_000],
        ttl_seconds: 0,
    };
    assert_eq!(
        error_code(&send(envelope(15, b"h", b"s"), big)),
        ErrorCode::RequestTooLarge
    );

    let scan = Request::Scan { context_id: 424242 };
    assert_eq!(
        error_code(&send(envelope(16, b"", b""), scan)),
        ErrorCode::ScannerNotFound
    );

    // Still usable after all of that.
    let set = Request::Set {
        key: Key::new("h", "s"),
        value: b"v".to_vec(),
        ttl_seconds: 0,
    };
    assert_eq!(send(envelope(17, b"h", b"s"), set), Ok(ResponseBody::Done));
    assert_eq!(
        send(envelope(18, b"h", b"s"), get),
        Ok(ResponseBody::Value(b"v".to_vec()))
    );
    assert!(node.terminate().success());
}

// A request sent to a shard that does not own its partition is forwarded
// over the mesh and answered correctly; pipelined requests all come back.
#[test]
fn requests_to_the_wrong_shard_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, PARTITIONS)]);
    let node = common::Node::start(&config);
    let mut batch = Vec::new();
    let mut expected_ids = Vec::new();
    for i in 0..64u64 {
        let hash_key = format!("fwd{i}");
        let set = Request::Set {
            key: Key::new(hash_key.clone(), "s"),
            value: hash_key.clone().into_bytes(),
            ttl_seconds: 0,
        };
        batch.extend(request_frame(&envelope(i, hash_key.as_bytes(), b"s"), &set));
        expected_ids.push(i);
    }
    // Every request goes to shard 1, whichever shard owns its partition.
    let mut stream = connect(node.addresses[1]);
    stream.write_all(&batch).unwrap();
    let mut ids = Vec::new();
    for _ in 0..64 {
        let (id, response) = read_response(&mut stream).unwrap();
        assert_eq!(response, Ok(ResponseBody::Done));
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, expected_ids);
    // Read them back through shard 0.
    let mut stream = connect(node.addresses[0]);
    for i in 0..64u64 {
        let hash_key = format!("fwd{i}");
        let get = Request::Get(Key::new(hash_key.clone(), "s"));
        stream
            .write_all(&request_frame(
                &envelope(i, hash_key.as_bytes(), b"s"),
                &get,
            ))
            .unwrap();
        let (id, response) = read_response(&mut stream).unwrap();
        assert_eq!(id, i);
        assert_eq!(response, Ok(ResponseBody::Value(hash_key.into_bytes())));
    }
    assert!(node.terminate().success());
}
