//! The real `markab meta` process over TCP: DDL round trips, restarts that
//! keep every table and configuration, and clear errors for bad input.
//! Talks raw frames with the wire codec (no client library); kills only the
//! processes it started, by pid.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use markab::wire::codec::{decode_response, Encoder};
use markab::wire::frame::{FrameDecoder, FRAME_BODY_BYTES_MAX};
use markab::wire::message::{
    CreateTableRequest, Envelope, ErrorCode, Key, NodeBeacon, Request, Response, ResponseBody,
    TableStatus,
};

/// How long meta may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long meta may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one request's round trip.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `markab meta` process.
struct Meta {
    child: Child,
    address: String,
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("meta.toml");
    let text = format!(
        "[meta]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nhold_seconds = 3600\nnode_timeout_ms = 60000\n# a fake node beacons by hand: no replication\nreplication = false\n",
        dir.join("meta-data")
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Meta {
    /// Starts `markab meta --config PATH` and waits for its ready line.
    fn start(config: &Path) -> Meta {
        let mut child = Command::new(env!("CARGO_BIN_EXE_markab"))
            .args(["meta", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn markab meta");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.starts_with("markab meta ready: ") => {
                    let rest = &line["markab meta ready: ".len()..];
                    let address = rest.split_whitespace().next().unwrap().to_owned();
                    assert!(rest.contains("data_dir="), "{line}");
                    return Meta { child, address };
                }
                Ok(_) => continue,
                Err(_) => {
                    let status = child.try_wait();
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("meta printed no ready line within {START_TIMEOUT:?} ({status:?})");
                }
            }
        }
    }

    fn connect(&self) -> Connection {
        let stream = TcpStream::connect(&self.address).expect("connect to meta");
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CALL_TIMEOUT)).unwrap();
        Connection {
            stream,
            decoder: FrameDecoder::new(FRAME_BODY_BYTES_MAX),
            encoder: Encoder::new(),
            next_request_id: 1,
        }
    }

    /// SIGTERM, then a bounded wait for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meta did not stop within {STOP_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Meta {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One TCP connection to meta speaking raw frames.
struct Connection {
    stream: TcpStream,
    decoder: FrameDecoder,
    encoder: Encoder,
    next_request_id: u64,
}

impl Connection {
    fn call(&mut self, request: Request) -> Response {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let envelope = Envelope {
            request_id,
            ..Envelope::default()
        };
        let mut out = Vec::new();
        self.encoder
            .request_frame(&envelope, &request, &mut out)
            .unwrap();
        self.stream.write_all(&out).unwrap();
        let (answered_id, response) = self.read_response().expect("meta closed the connection");
        assert_eq!(answered_id, request_id);
        response
    }

    /// The next response, or `None` when meta closed the connection.
    fn read_response(&mut self) -> Option<(u64, Response)> {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(decode_response(&frame.body).unwrap());
            }
            let buffer = self.decoder.read_buffer(4096);
            let bytes_read = self.stream.read(buffer).expect("read from meta");
            if bytes_read == 0 {
                return None;
            }
            self.decoder.commit_read(bytes_read);
        }
    }
}

fn beacon() -> Request {
    Request::Beacon(NodeBeacon {
        node: "127.0.0.1:45000".into(),
        shard_addresses: vec!["127.0.0.1:45000".into(), "127.0.0.1:45001".into()],
        replicas: Vec::new(),
        incarnation: 1,
        backups: Vec::new(),
        splits: Vec::new(),
        dups: Vec::new(),
    })
}

fn create(name: &str, partition_count: i32, replica_count: i32) -> Request {
    Request::CreateTable(CreateTableRequest {
        table: name.into(),
        partition_count,
        replica_count,
        envs: vec![("rocksdb.usage_scenario".into(), "normal".into())],
        success_if_exist: false,
    })
}

fn error_code(response: Response) -> (ErrorCode, String) {
    let error = response.expect_err("expected an error");
    (error.code, error.message)
}

// Tables, their configurations, routes and envs come back intact after a
// SIGTERM (exit 0) and a restart on the same data directory; a drop and a
// recall also survive restarts.
#[test]
fn tables_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let meta = Meta::start(&config);
    let mut connection = meta.connect();
    let ack = connection.call(beacon()).unwrap();
    assert!(matches!(ack, ResponseBody::BeaconAck(_)), "{ack:?}");
    let Ok(ResponseBody::Table(info)) = connection.call(create("temp", 8, 1)) else {
        panic!("create failed")
    };
    assert_eq!(
        (info.app_id, info.partition_count, info.replica_count),
        (1, 8, 1)
    );
    connection.call(create("other", 2, 0)).unwrap();
    let describe = Request::DescribeTable {
        table: "temp".into(),
    };
    let route = Request::QueryRoute {
        table: "temp".into(),
    };
    let list = Request::ListTables {
        include_dropped: true,
    };
    let described = connection.call(describe.clone()).unwrap();
    let routed = connection.call(route.clone()).unwrap();
    let listed = connection.call(list.clone()).unwrap();
    let ResponseBody::Route(route_body) = &routed else {
        panic!("{routed:?}")
    };
    assert_eq!(route_body.partitions.len(), 8);
    assert!(route_body
        .partitions
        .iter()
        .all(|partition| partition.address.starts_with("127.0.0.1:4500")));
    drop(connection);
    assert!(meta.terminate().success(), "meta exits 0 on SIGTERM");

    let meta = Meta::start(&config);
    let mut connection = meta.connect();
    assert_eq!(connection.call(describe.clone()).unwrap(), described);
    assert_eq!(
        connection.call(route.clone()).unwrap(),
        routed,
        "routes keep the last known addresses before any beacon"
    );
    assert_eq!(connection.call(list.clone()).unwrap(), listed);
    let envs = connection
        .call(Request::GetAppEnvs {
            table: "temp".into(),
        })
        .unwrap();
    assert_eq!(
        envs,
        ResponseBody::Pairs(vec![("rocksdb.usage_scenario".into(), "normal".into())])
    );

    connection
        .call(Request::DropTable {
            table: "temp".into(),
            reserve_seconds: None,
        })
        .unwrap();
    drop(connection);
    assert!(meta.terminate().success());

    let meta = Meta::start(&config);
    let mut connection = meta.connect();
    let Ok(ResponseBody::Tables(tables)) = connection.call(list.clone()) else {
        panic!("list failed")
    };
    let dropped = tables.iter().find(|table| table.app_id == 1).unwrap();
    assert_eq!(dropped.status, TableStatus::Dropped);
    assert_eq!(
        error_code(connection.call(route.clone())).0,
        ErrorCode::UnknownTable
    );
    connection
        .call(Request::RecallTable {
            app_id: 1,
            new_name: String::new(),
        })
        .unwrap();
    assert_eq!(connection.call(describe).unwrap(), described);
    let Ok(ResponseBody::Table(third)) = ({
        connection.call(beacon()).unwrap();
        connection.call(create("third", 1, 1))
    }) else {
        panic!("create after restart failed")
    };
    assert_eq!(third.app_id, 3, "app ids continue after restarts");
    drop(connection);
    assert!(meta.terminate().success());
}

// Bad input gets clear errors over the wire, and a failed create leaves
// nothing behind, even across a restart.
#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let meta = Meta::start(&config);
    let mut connection = meta.connect();
    let (code, message) = error_code(connection.call(create("t", 4, 1)));
    assert_eq!(code, ErrorCode::NotEnoughNodes, "{message}");

    connection.call(beacon()).unwrap();
    let cases = [
        (
            create("t", 3, 1),
            ErrorCode::InvalidArgument,
            "power of two",
        ),
        (create("bad/name", 4, 1), ErrorCode::InvalidArgument, "'/'"),
        (
            create("t", 4, 9),
            ErrorCode::InvalidArgument,
            "replica_count = 9",
        ),
        (
            Request::DropTable {
                table: "missing".into(),
                reserve_seconds: None,
            },
            ErrorCode::UnknownTable,
            "\"missing\"",
        ),
        (
            Request::RecallTable {
                app_id: 42,
                new_name: String::new(),
            },
            ErrorCode::UnknownTable,
            "app_id 42",
        ),
        (
            Request::Get(Key::new("h", "s")),
            ErrorCode::InvalidArgument,
            "send data requests",
        ),
    ];
    for (request, expected, text) in cases {
        let (code, message) = error_code(connection.call(request.clone()));
        assert_eq!(code, expected, "{request:?}: {message}");
        assert!(message.contains(text), "{request:?}: {message}");
    }
    connection.call(create("t", 4, 1)).unwrap();
    let (code, message) = error_code(connection.call(create("t", 4, 1)));
    assert_eq!(code, ErrorCode::TableExists, "{message}");
    drop(connection);
    assert!(meta.terminate().success());

    let meta = Meta::start(&config);
    let mut connection = meta.connect();
    let Ok(ResponseBody::Tables(tables)) = connection.call(Request::ListTables {
        include_dropped: true,
    }) else {
        panic!("list failed")
    };
    let names: Vec<(i32, String)> = tables.into_iter().map(|t| (t.app_id, t.name)).collect();
    assert_eq!(
        names,
        vec![(1, "t".to_owned())],
        "failed creates left nothing"
    );
}

// A frame with a broken header gets a BAD_FRAME reply and a closed
// connection; meta keeps serving other connections.
#[test]
fn bad_frame_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::start(&write_config(dir.path()));
    let mut connection = meta.connect();
    connection
        .stream
        .write_all(b"this is not a markab frame")
        .unwrap();
    let (request_id, response) = connection.read_response().expect("a BAD_FRAME reply");
    assert_eq!(request_id, 0);
    assert_eq!(error_code(response).0, ErrorCode::BadFrame);
    assert!(connection.read_response().is_none(), "connection closed");

    let mut other = meta.connect();
    let Ok(ResponseBody::Pairs(info)) = other.call(Request::ClusterInfo) else {
        panic!("cluster_info failed")
    };
    let address = info.iter().find(|(key, _)| key == "meta_address").unwrap();
    assert_eq!(address.1, meta.address);
    drop(other);
    assert!(meta.terminate().success());
}
