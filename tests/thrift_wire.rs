//! Pegasus's client protocol (`THFT`) against a real node over raw
//! sockets: the same port serves Markab frames and THFT; data RPCs are
//! answered in Pegasus's vocabulary, forwarded across shards like Markab
//! requests; a standalone node answers query-config for its tables; bad
//! RPCs get error replies on a connection that goes on; and random or
//! mutated THFT frames never take the node down or disturb other
//! connections.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Rng;
use markab::key;
use markab::wire::codec::{decode_response, Encoder};
use markab::wire::frame::FRAME_HEADER_BYTES;
use markab::wire::thrift::{self, Reply, ReplyResult, RequestHeader};
use markab::wire::{Envelope, Gpid, Key, MultiGetRequest, Request, ResponseBody, SortKeyValue};

const PARTITIONS: u32 = 8;
const APP_ID: i32 = 1;

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads one THFT reply; `None` when the peer closed (or stayed silent
/// past the read timeout).
fn read_reply(stream: &mut TcpStream) -> Option<Reply> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let total = u32::from_be_bytes(length) as usize;
    assert!((4..=64 << 20).contains(&total), "reply length {total}");
    let mut frame = vec![0u8; total];
    frame[..4].copy_from_slice(&length);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(thrift::decode_reply(&frame).expect("the node's reply decodes"))
}

fn header(hash_key: &[u8], version: u32) -> RequestHeader {
    let partition_hash = key::partition_hash(hash_key, b"");
    RequestHeader {
        version,
        app_id: APP_ID,
        partition_index: key::partition_index(partition_hash, PARTITIONS) as i32,
        timeout_ms: 5_000,
        partition_hash: 0,
        is_backup_request: false,
    }
}

/// A whole THFT request frame for `request` about `hash_key`.
fn frame(seqid: i32, hash_key: &[u8], request: &Request, version: u32) -> Vec<u8> {
    let (_, body) = thrift::encode_data_call(seqid, request, 0).expect("a Pegasus RPC exists");
    thrift::encode_request_frame(&header(hash_key, version), &body)
}

fn call(stream: &mut TcpStream, seqid: i32, hash_key: &[u8], request: &Request) -> Reply {
    stream
        .write_all(&frame(seqid, hash_key, request, 0))
        .unwrap();
    let reply = read_reply(stream).expect("a reply");
    assert_eq!(reply.seqid, seqid);
    reply
}

fn set(hash_key: &str, sort_key: &str, value: &str) -> Request {
    Request::Set {
        key: Key::new(hash_key, sort_key),
        value: value.as_bytes().to_vec(),
        ttl_seconds: 0,
    }
}

fn get(hash_key: &str, sort_key: &str) -> Request {
    Request::Get(Key::new(hash_key, sort_key))
}

fn read_value(reply: &Reply) -> (i32, Vec<u8>) {
    assert_eq!(reply.error_name, "ERR_OK", "{reply:?}");
    match &reply.result {
        Some(ReplyResult::Read { error, value, .. }) => (*error, value.clone()),
        other => panic!("expected a read response, got {other:?}"),
    }
}

// One port, two protocols: a THFT connection and a Markab connection on
// the same shard port see each other's writes; every hash key is sent to
// shard 0, so half of them are forwarded to shard 1 over the mesh.
#[test]
fn thft_and_markab_frames_share_every_shard_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", APP_ID, PARTITIONS)]);
    let node = common::Node::start(&config);
    let mut thft = connect(node.addresses[0]);
    for i in 0..32 {
        let hash_key = format!("h{i}");
        let reply = call(
            &mut thft,
            i,
            hash_key.as_bytes(),
            &set(&hash_key, "s", &format!("v{i}")),
        );
        assert_eq!(reply.error_name, "ERR_OK", "{reply:?}");
        assert!(
            matches!(reply.result, Some(ReplyResult::Update { error: 0, .. })),
            "{reply:?}"
        );
    }
    // The Java client's v1 header reads the same data.
    for i in 0..32 {
        let hash_key = format!("h{i}");
        thft.write_all(&frame(
            100 + i,
            hash_key.as_bytes(),
            &get(&hash_key, "s"),
            1,
        ))
        .unwrap();
        let reply = read_reply(&mut thft).unwrap();
        assert_eq!(read_value(&reply), (0, format!("v{i}").into_bytes()));
    }
    // A Markab connection on the same port reads what THFT wrote.
    let mut markab = connect(node.addresses[0]);
    let hash_key = b"h7";
    let partition_hash = key::partition_hash(hash_key, b"s");
    let envelope = Envelope {
        request_id: 9,
        timeout_ms: 5_000,
        gpid: Gpid {
            app_id: APP_ID,
            partition_index: key::partition_index(partition_hash, PARTITIONS) as i32,
        },
        partition_hash,
        partition_count: 0,
    };
    let mut request = Vec::new();
    Encoder::new()
        .request_frame(&envelope, &get("h7", "s"), &mut request)
        .unwrap();
    markab.write_all(&request).unwrap();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    markab.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize];
    markab.read_exact(&mut body).unwrap();
    assert_eq!(
        decode_response(&body).unwrap(),
        (9, Ok(ResponseBody::Value(b"v7".to_vec())))
    );

    // Storage outcomes travel inside ERR_OK replies: a missing key is
    // error 1, multi_get's records come back sorted.
    let missing = call(&mut thft, 200, b"nobody", &get("nobody", "s"));
    assert_eq!(read_value(&missing).0, 1);
    let multi_set = Request::MultiSet {
        hash_key: b"m".to_vec(),
        kvs: (0..5)
            .map(|i| SortKeyValue {
                sort_key: format!("s{i}").into_bytes(),
                value: format!("{i}").into_bytes(),
            })
            .collect(),
        ttl_seconds: 0,
    };
    call(&mut thft, 201, b"m", &multi_set);
    let mut range = MultiGetRequest::range(b"m".to_vec());
    range.max_kv_count = 3;
    let reply = call(&mut thft, 202, b"m", &Request::MultiGet(range));
    match reply.result {
        Some(ReplyResult::MultiGet { error, kvs, .. }) => {
            assert_eq!(error, 7, "a count limit makes the result incomplete");
            let sort_keys: Vec<&[u8]> = kvs.iter().map(|(k, _)| k.as_slice()).collect();
            assert_eq!(sort_keys, [b"s0", b"s1", b"s2"]);
        }
        other => panic!("expected multi_get, got {other:?}"),
    }
    assert!(node.terminate().success());
}

// A standalone node is its own meta for Pegasus clients: query-config
// lists every partition with its shard's address.
#[test]
fn a_standalone_node_answers_query_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", APP_ID, PARTITIONS)]);
    let node = common::Node::start(&config);
    let mut stream = connect(node.addresses[1]);
    let ask = |stream: &mut TcpStream, seqid: i32, table: &str| {
        let body = thrift::encode_query_config_call(seqid, table);
        stream
            .write_all(&thrift::encode_request_frame(
                &RequestHeader::default(),
                &body,
            ))
            .unwrap();
        read_reply(stream).unwrap()
    };
    let reply = ask(&mut stream, 1, "temp");
    let Some(ReplyResult::QueryConfig(config)) = reply.result else {
        panic!("expected a query-config response, got {reply:?}");
    };
    assert_eq!(config.err, "ERR_OK");
    assert_eq!(
        (config.app_id, config.partition_count),
        (APP_ID, PARTITIONS as i32)
    );
    assert_eq!(config.partitions.len(), PARTITIONS as usize);
    for (index, partition) in config.partitions.iter().enumerate() {
        assert_eq!(partition.partition_index, index as i32);
        let primary = partition.primary.expect("every partition has a primary");
        assert_eq!(
            SocketAddr::V4(primary),
            node.addresses[index % node.addresses.len()]
        );
    }
    let reply = ask(&mut stream, 2, "no_such_table");
    let Some(ReplyResult::QueryConfig(config)) = reply.result else {
        panic!("expected a query-config response, got {reply:?}");
    };
    assert_eq!(config.err, "ERR_OBJECT_NOT_FOUND");
    assert!(node.terminate().success());
}

// RPCs that cannot be served get an rDSN error name, and the connection
// goes on: an unknown RPC name, a partition the node does not host, a
// request over the node's size bound. clear_scanner is never answered.
#[test]
fn bad_rpcs_get_error_names_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config_with(
        dir.path(),
        2,
        &[("temp", APP_ID, PARTITIONS)],
        "request_bytes_max = 65536\n",
    );
    let node = common::Node::start(&config);
    let mut stream = connect(node.addresses[0]);

    // An RPC name Markab does not serve.
    let (_, body) = thrift::encode_data_call(1, &get("h", "s"), 0).unwrap();
    let renamed = rename_call(&body, "RPC_RRDB_RRDB_NO_SUCH_THING");
    stream
        .write_all(&thrift::encode_request_frame(&header(b"h", 0), &renamed))
        .unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(reply.error_name, "ERR_HANDLER_NOT_FOUND");
    assert!(reply.result.is_none());

    // A table the node does not have: clients query meta again.
    let mut unknown = header(b"h", 0);
    unknown.app_id = 77;
    let (_, body) = thrift::encode_data_call(2, &get("h", "s"), 0).unwrap();
    stream
        .write_all(&thrift::encode_request_frame(&unknown, &body))
        .unwrap();
    assert_eq!(
        read_reply(&mut stream).unwrap().error_name,
        "ERR_OBJECT_NOT_FOUND"
    );

    // Over the node's request bound.
    let big = Request::Set {
        key: Key::new("h", "s"),
        value: vec![7u8; 100_000],
        ttl_seconds: 0,
    };
    let reply = call(&mut stream, 3, b"h", &big);
    assert_eq!(reply.error_name, "ERR_INVALID_DATA");

    // clear_scanner gets no reply: the next reply is the get's.
    stream
        .write_all(&frame(4, b"", &Request::ClearScanner { context_id: 12 }, 0))
        .unwrap();
    let reply = call(&mut stream, 5, b"h", &get("h", "s"));
    assert_eq!(read_value(&reply).0, 1);
    assert!(node.terminate().success());
}

/// `body` with its message name replaced (strict TBinary header: version
/// word, then the name as a length-prefixed string).
fn rename_call(body: &[u8], name: &str) -> Vec<u8> {
    let old_length = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
    let mut renamed = body[..4].to_vec();
    renamed.extend_from_slice(&(name.len() as u32).to_be_bytes());
    renamed.extend_from_slice(name.as_bytes());
    renamed.extend_from_slice(&body[8 + old_length..]);
    renamed
}

// Random and mutated THFT frames, each on its own connection: the node
// answers with an error reply or closes the connection, never dies, and a
// bystander connection keeps being served correctly throughout.
#[test]
fn mutated_thft_frames_never_hurt_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", APP_ID, PARTITIONS)]);
    let mut node = common::Node::start(&config);
    let mut bystander = connect(node.addresses[0]);
    call(&mut bystander, 1, b"keep", &set("keep", "s", "alive"));

    let seeds: Vec<Vec<u8>> = [
        get("h", "s"),
        set("h", "s", "v"),
        Request::MultiGet(MultiGetRequest::range(b"h".to_vec())),
        Request::Del(Key::new("h", "s")),
        Request::Scan { context_id: 3 },
    ]
    .iter()
    .enumerate()
    .flat_map(|(i, request)| {
        [
            frame(i as i32, b"h", request, 0),
            frame(i as i32, b"h", request, 1),
        ]
    })
    .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let cases = 400;
    let (mut answered, mut silent) = (0, 0);
    for case in 0..cases {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        match rng.below(4) {
            // Flip a few bytes anywhere past the magic.
            0 | 1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = 4 + rng.below(bytes.len() - 4);
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            // Cut the frame short, then close.
            2 => bytes.truncate(4 + rng.below(bytes.len() - 4)),
            // Random bytes behind the magic.
            _ => {
                bytes.truncate(4);
                for _ in 0..rng.below(200) {
                    bytes.push(rng.next() as u8);
                }
            }
        }
        let mut stream = connect(node.addresses[case % 2]);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Whatever comes back is a well-formed reply (or nothing).
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let mut rest = answer.as_slice();
        while rest.len() >= 4 {
            let total = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(total >= 4 && total <= rest.len(), "case {case}: torn reply");
            thrift::decode_reply(&rest[..total])
                .unwrap_or_else(|error| panic!("case {case}: bad reply: {error}"));
            rest = &rest[total..];
        }
        assert!(rest.is_empty(), "case {case}: trailing bytes");
        if answer.is_empty() {
            silent += 1;
        } else {
            answered += 1;
        }
        if case % 50 == 0 {
            let reply = call(
                &mut bystander,
                1_000 + case as i32,
                b"keep",
                &get("keep", "s"),
            );
            assert_eq!(read_value(&reply), (0, b"alive".to_vec()));
        }
    }
    assert!(node.is_running(), "the node survived {cases} bad frames");
    let reply = call(&mut bystander, 5_000, b"keep", &get("keep", "s"));
    assert_eq!(read_value(&reply), (0, b"alive".to_vec()));
    eprintln!(
        "{cases} cases in {:?}: {answered} answered, {silent} closed without a reply",
        started.elapsed()
    );
    assert!(answered > 0 && silent > 0, "the cases reach both outcomes");
    assert!(node.terminate().success());
}
