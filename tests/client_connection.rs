//! The client's connection layer against a scripted in-test server on
//! 127.0.0.1: pipelining with out-of-order responses, per-request timeouts,
//! connection loss and reconnection, the request size bound, and scan
//! cursors; and meta mode against a scripted fake meta with fake nodes:
//! route refresh and retry, bounded attempts, no blind retry of writes, the
//! admin API and the shell's admin commands. (End-to-end tests against real
//! processes live elsewhere.)

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use markab::client::{
    Client, ClientError, ClientOptions, ScanOptions, RETRY_BACKOFF_INITIAL, ROUTED_ATTEMPTS_MAX,
    ROUTE_REFRESH_INTERVAL_MIN,
};
use markab::wire::codec::{decode_request, Encoder};
use markab::wire::frame::{FrameDecoder, FRAME_BODY_BYTES_MAX};
use markab::wire::{
    CreateTableRequest, Envelope, ErrorCode, NodeInfo, OpError, PartitionConfig, PartitionRoute,
    Record, Request, Response, ResponseBody, Route, TableDescription, TableInfo, TableStatus,
    SCAN_CONTEXT_COMPLETE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;

/// Every test finishes well within this bound or fails.
const TEST_TIME_MAX: Duration = Duration::from_secs(20);
const PARTITION_COUNT: i32 = 4;

/// What the scripted server does with one request.
enum Action {
    Reply(Response),
    /// Never answer.
    Ignore,
    /// Answer after a delay.
    ReplyAfter(Duration, Response),
    /// Hold the answer; once `count` answers are held, send them all in
    /// reverse order of arrival.
    HoldReversed {
        count: usize,
        response: Response,
    },
    /// Close the connection.
    Close,
}

/// Decides the action for (connection number, envelope, request).
type Handler = dyn Fn(usize, &Envelope, &Request) -> Action + Send + Sync;

struct TestServer {
    address: String,
    connections: Arc<AtomicUsize>,
    /// Every request received, with its connection number.
    received: Arc<Mutex<Vec<(usize, Request)>>>,
}

impl TestServer {
    /// A fake node: it answers `QueryRoute` itself (every partition on its
    /// own address; `missing` is unknown) and passes every other request to
    /// `handler`.
    async fn start(
        handler: impl Fn(usize, &Envelope, &Request) -> Action + Send + Sync + 'static,
    ) -> TestServer {
        TestServer::start_with(true, handler).await
    }

    /// A fake meta: `handler` answers every request, `QueryRoute` included.
    async fn start_meta(
        handler: impl Fn(usize, &Envelope, &Request) -> Action + Send + Sync + 'static,
    ) -> TestServer {
        TestServer::start_with(false, handler).await
    }

    async fn start_with(
        answer_routes: bool,
        handler: impl Fn(usize, &Envelope, &Request) -> Action + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let server = TestServer {
            address: address.clone(),
            connections: connections.clone(),
            received: received.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let number = connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(
                    socket,
                    number,
                    address.clone(),
                    answer_routes,
                    handler.clone(),
                    received.clone(),
                ));
            }
        });
        server
    }

    fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<(usize, Request)> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests received match `predicate`.
    fn count(&self, predicate: impl Fn(&Request) -> bool) -> usize {
        self.received()
            .iter()
            .filter(|(_, request)| predicate(request))
            .count()
    }
}

fn route(address: &str, table: &str) -> Route {
    route_with_app_id(address, table, 7)
}

fn route_with_app_id(address: &str, table: &str, app_id: i32) -> Route {
    Route {
        table: table.to_string(),
        app_id,
        partition_count: PARTITION_COUNT,
        partitions: (0..PARTITION_COUNT)
            .map(|partition_index| PartitionRoute {
                partition_index,
                address: address.to_string(),
                ballot: 1,
            })
            .collect(),
    }
}

async fn write_response(
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    request_id: u64,
    response: &Response,
) {
    let mut frame = Vec::new();
    Encoder::new()
        .response_frame(request_id, response, &mut frame)
        .unwrap();
    let _ = writer.lock().await.write_all(&frame).await;
}

async fn serve(
    socket: tokio::net::TcpStream,
    number: usize,
    address: String,
    answer_routes: bool,
    handler: Arc<Handler>,
    received: Arc<Mutex<Vec<(usize, Request)>>>,
) {
    let (mut reader, writer) = socket.into_split();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    let mut held: Vec<(u64, Response)> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let bytes_read = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(bytes_read) => bytes_read,
        };
        decoder.extend(&chunk[..bytes_read]);
        while let Some(frame) = decoder.next_frame().unwrap() {
            let (envelope, request) = decode_request(&frame.body).unwrap();
            received.lock().unwrap().push((number, request.clone()));
            let action = match &request {
                _ if !answer_routes => handler(number, &envelope, &request),
                Request::QueryRoute { table } if table == "missing" => {
                    Action::Reply(Err(OpError::new(ErrorCode::UnknownTable, "no such table")))
                }
                Request::QueryRoute { table } => {
                    Action::Reply(Ok(ResponseBody::Route(route(&address, table))))
                }
                _ => handler(number, &envelope, &request),
            };
            let request_id = envelope.request_id;
            match action {
                Action::Reply(response) => write_response(&writer, request_id, &response).await,
                Action::Ignore => {}
                Action::ReplyAfter(delay, response) => {
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        write_response(&writer, request_id, &response).await;
                    });
                }
                Action::HoldReversed { count, response } => {
                    held.push((request_id, response));
                    if held.len() == count {
                        for (request_id, response) in held.drain(..).rev() {
                            write_response(&writer, request_id, &response).await;
                        }
                    }
                }
                Action::Close => {
                    let _ = writer.lock().await.shutdown().await;
                    return;
                }
            }
        }
    }
}

/// The value the scripted servers return for a get: the sort key, reversed.
fn value_of(sort_key: &[u8]) -> Vec<u8> {
    sort_key.iter().rev().copied().collect()
}

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIME_MAX, test)
        .await
        .expect("the test ran past its time bound")
}

// Proves that pipelined requests answered in reverse order each get their own
// response (matching is by request id), all over one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversed_responses_match_by_request_id() {
    bounded(async {
        const REQUESTS: usize = 32;
        let server = TestServer::start(|_, _, request| match request {
            Request::Get(key) => Action::HoldReversed {
                count: REQUESTS,
                response: Ok(ResponseBody::Value(value_of(&key.sort_key))),
            },
            _ => Action::Ignore,
        })
        .await;
        let client = Client::connect(&server.address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("t").await.unwrap();
        assert_eq!(table.partition_count(), PARTITION_COUNT as u32);
        assert_eq!(table.app_id(), 7);

        let sort_keys: Vec<Vec<u8>> = (0..REQUESTS)
            .map(|i| format!("sort-{i:03}").into_bytes())
            .collect();
        let gets = sort_keys
            .iter()
            .map(|sort_key| table.get(b"hash", sort_key));
        let values = futures::future::join_all(gets).await;
        for (sort_key, value) in sort_keys.iter().zip(values) {
            assert_eq!(value.unwrap(), Some(value_of(sort_key)));
        }
        assert_eq!(
            server.connection_count(),
            1,
            "all requests share one connection"
        );
    })
    .await;
}

// Proves that a request without an answer fails with Timeout while other
// requests on the same connection succeed, and that a late answer to a
// timed-out request is dropped without disturbing the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_times_out_others_succeed() {
    bounded(async {
        let server = TestServer::start(|_, _, request| match request {
            Request::Get(key) if key.sort_key == b"never" => Action::Ignore,
            Request::Get(key) if key.sort_key == b"late" => Action::ReplyAfter(
                Duration::from_millis(600),
                Ok(ResponseBody::Value(b"too late".to_vec())),
            ),
            Request::Get(key) => Action::Reply(Ok(ResponseBody::Value(value_of(&key.sort_key)))),
            _ => Action::Ignore,
        })
        .await;
        let options = ClientOptions {
            operation_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        let client = Client::connect(&server.address, options).await.unwrap();
        let table = client.open_table("t").await.unwrap();

        let (never, late, others) = tokio::join!(
            table.get(b"h", b"never"),
            table.get(b"h", b"late"),
            futures::future::join_all((0..10).map(|i| {
                let table = table.clone();
                async move { table.get(b"h", format!("k{i}").as_bytes()).await }
            })),
        );
        for result in [never, late] {
            match result {
                Err(ClientError::Timeout {
                    operation,
                    timeout_ms,
                }) => {
                    assert_eq!(operation, "get");
                    assert_eq!(timeout_ms, 300);
                }
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
        for (i, result) in others.into_iter().enumerate() {
            assert_eq!(result.unwrap(), Some(value_of(format!("k{i}").as_bytes())));
        }
        // Let the late answer arrive; it must be dropped quietly.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            table.get(b"h", b"after").await.unwrap(),
            Some(value_of(b"after"))
        );
        assert_eq!(
            server.connection_count(),
            1,
            "a timeout does not cost the connection"
        );
    })
    .await;
}

// Proves that when the server closes the connection, pending writes fail
// with an Io error (never retried), and the next request dials a new
// connection and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connection_fails_pending_and_next_request_reconnects() {
    bounded(async {
        let server = TestServer::start(|connection, _, request| match (connection, request) {
            (0, Request::Set { .. }) => Action::Ignore,
            (0, Request::Del(_)) => Action::Close,
            (_, Request::Get(key)) => {
                Action::Reply(Ok(ResponseBody::Value(value_of(&key.sort_key))))
            }
            _ => Action::Reply(Ok(ResponseBody::Done)),
        })
        .await;
        let client = Client::connect(&server.address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("t").await.unwrap();

        let pending = tokio::spawn({
            let table = table.clone();
            async move { table.set(b"h", b"pending", b"v", 0).await }
        });
        // Wait until the server has the pending write.
        while !server
            .received()
            .iter()
            .any(|(_, r)| matches!(r, Request::Set { .. }))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let closing = table.del(b"h", b"close").await;
        assert!(matches!(closing, Err(ClientError::Io(_))), "{closing:?}");
        let pending = pending.await.unwrap();
        assert!(matches!(pending, Err(ClientError::Io(_))), "{pending:?}");
        let sets = server
            .received()
            .iter()
            .filter(|(_, r)| matches!(r, Request::Set { .. }))
            .count();
        assert_eq!(sets, 1, "a write whose connection failed is not retried");

        assert_eq!(
            table.get(b"h", b"again").await.unwrap(),
            Some(value_of(b"again"))
        );
        assert_eq!(server.connection_count(), 2);
    })
    .await;
}

// Proves that a read pending when its connection fails is retried once on
// a new connection and succeeds there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_read_is_retried_after_reconnect() {
    bounded(async {
        let server = TestServer::start(|connection, _, request| match (connection, request) {
            (0, Request::Get(_)) => Action::Ignore,
            (0, Request::Del(_)) => Action::Close,
            (_, Request::Get(key)) => {
                Action::Reply(Ok(ResponseBody::Value(value_of(&key.sort_key))))
            }
            _ => Action::Reply(Ok(ResponseBody::Done)),
        })
        .await;
        let client = Client::connect(&server.address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("t").await.unwrap();
        let read = tokio::spawn({
            let table = table.clone();
            async move { table.get(b"h", b"hang").await }
        });
        while !server
            .received()
            .iter()
            .any(|(_, r)| matches!(r, Request::Get(_)))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(
            table.del(b"h", b"close").await,
            Err(ClientError::Io(_))
        ));
        assert_eq!(read.await.unwrap().unwrap(), Some(value_of(b"hang")));
        let gets: Vec<usize> = server
            .received()
            .iter()
            .filter(|(_, r)| matches!(r, Request::Get(_)))
            .map(|(connection, _)| *connection)
            .collect();
        assert_eq!(gets, vec![0, 1], "one try per connection");
    })
    .await;
}

// Proves that a request over request_bytes_max fails with REQUEST_TOO_LARGE
// without reaching the server, and that server error codes map to the API
// (NOT_FOUND → None, UNKNOWN_TABLE → UnknownTable, others → Server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bound_and_error_mapping() {
    bounded(async {
        let server = TestServer::start(|_, _, request| match request {
            Request::Get(_) | Request::Ttl(_) => {
                Action::Reply(Err(OpError::new(ErrorCode::NotFound, "gone")))
            }
            _ => Action::Reply(Err(OpError::new(ErrorCode::Busy, "try later"))),
        })
        .await;
        let options = ClientOptions {
            request_bytes_max: 1024,
            ..ClientOptions::default()
        };
        let client = Client::connect(&server.address, options).await.unwrap();
        assert!(matches!(
            client.open_table("missing").await,
            Err(ClientError::UnknownTable(name)) if name == "missing"
        ));
        let table = client.open_table("t").await.unwrap();

        let error = table
            .set(b"h", b"s", &vec![b'x'; 4096], 0)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::RequestTooLarge), "{error:?}");
        assert!(!server
            .received()
            .iter()
            .any(|(_, r)| matches!(r, Request::Set { .. })));

        assert_eq!(table.get(b"h", b"s").await.unwrap(), None);
        assert_eq!(table.ttl(b"h", b"s").await.unwrap(), None);
        let error = table.del(b"h", b"s").await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Busy));
    })
    .await;
}

// Proves that requests carry the routed gpid and partition hash, and that
// batch_get sends one request per partition and returns records in the
// caller's key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_batch_get_order() {
    bounded(async {
        let server = TestServer::start(|_, envelope, request| match request {
            Request::Get(key) => {
                let hash = markab::key::partition_hash(&key.hash_key, &key.sort_key);
                let index = markab::key::partition_index(hash, PARTITION_COUNT as u32) as i32;
                let routed = envelope.partition_hash == hash
                    && envelope.gpid.partition_index == index
                    && envelope.gpid.app_id == 7;
                Action::Reply(Ok(ResponseBody::Value(vec![routed as u8])))
            }
            Request::BatchGet { keys } => {
                let records = keys
                    .iter()
                    // Keys whose sort key starts with "missing" do not exist.
                    .filter(|key| !key.sort_key.starts_with(b"missing"))
                    .map(|key| Record {
                        hash_key: key.hash_key.clone(),
                        sort_key: key.sort_key.clone(),
                        value: value_of(&key.sort_key),
                    })
                    .collect();
                Action::Reply(Ok(ResponseBody::BatchGet(records)))
            }
            _ => Action::Ignore,
        })
        .await;
        let client = Client::connect(&server.address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("t").await.unwrap();
        for i in 0..16 {
            let hash_key = format!("user{i}");
            assert_eq!(
                table.get(hash_key.as_bytes(), b"s").await.unwrap(),
                Some(vec![1])
            );
        }

        let keys: Vec<markab::wire::Key> = (0..40)
            .map(|i| {
                let sort_key = if i % 5 == 0 {
                    format!("missing{i}")
                } else {
                    format!("s{i}")
                };
                markab::wire::Key::new(format!("user{}", i % 13), sort_key)
            })
            .collect();
        let records = table.batch_get(keys.clone()).await.unwrap();
        let expected: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| !key.sort_key.starts_with(b"missing"))
            .map(|key| key.sort_key.clone())
            .collect();
        let got: Vec<Vec<u8>> = records
            .iter()
            .map(|record| record.sort_key.clone())
            .collect();
        assert_eq!(got, expected);
        let batch_requests = server
            .received()
            .iter()
            .filter(|(_, r)| matches!(r, Request::BatchGet { .. }))
            .count();
        assert!((1..=PARTITION_COUNT as usize).contains(&batch_requests));
    })
    .await;
}

// Proves a full scan walks every partition through GetScanner and Scan until
// each cursor completes, count sums the per-batch counts, and a stream
// dropped early clears its open cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_walk_every_partition_and_clear_early_drops() {
    bounded(async {
        // Partition p: GetScanner returns record "p-0" and cursor 100 + p;
        // Scan{100 + p} returns "p-1" and completes.
        let server = TestServer::start(|_, envelope, request| {
            let partition = envelope.gpid.partition_index;
            let record = |n: i32| Record {
                hash_key: format!("p{partition}").into_bytes(),
                sort_key: format!("{n}").into_bytes(),
                value: b"v".to_vec(),
            };
            match request {
                Request::GetScanner(scan) if scan.only_return_count => {
                    Action::Reply(Ok(ResponseBody::Scan {
                        records: Vec::new(),
                        count: 3,
                        context_id: SCAN_CONTEXT_COMPLETE,
                    }))
                }
                Request::GetScanner(_) => Action::Reply(Ok(ResponseBody::Scan {
                    records: vec![record(0)],
                    count: 1,
                    context_id: 100 + i64::from(partition),
                })),
                Request::Scan { context_id } if *context_id == 100 + i64::from(partition) => {
                    Action::Reply(Ok(ResponseBody::Scan {
                        records: vec![record(1)],
                        count: 1,
                        context_id: SCAN_CONTEXT_COMPLETE,
                    }))
                }
                Request::ClearScanner { .. } => Action::Reply(Ok(ResponseBody::Done)),
                _ => Action::Reply(Err(OpError::new(ErrorCode::ScannerNotFound, "bad cursor"))),
            }
        })
        .await;
        let client = Client::connect(&server.address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("t").await.unwrap();

        let records: Vec<Record> = table
            .full_scan(ScanOptions::default())
            .map(|record| record.unwrap())
            .collect()
            .await;
        let names: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    String::from_utf8_lossy(&r.hash_key),
                    String::from_utf8_lossy(&r.sort_key)
                )
            })
            .collect();
        assert_eq!(
            names,
            vec!["p0/0", "p0/1", "p1/0", "p1/1", "p2/0", "p2/1", "p3/0", "p3/1"]
        );

        assert_eq!(
            table.count(ScanOptions::default()).await.unwrap(),
            3 * PARTITION_COUNT as i64
        );

        {
            let stream = table.full_scan(ScanOptions::default());
            futures::pin_mut!(stream);
            assert!(stream.next().await.unwrap().is_ok());
        } // Dropped with cursor 100 open on partition 0.
        let cleared = async {
            loop {
                if server
                    .received()
                    .iter()
                    .any(|(_, r)| matches!(r, Request::ClearScanner { context_id: 100 }))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), cleared)
            .await
            .expect("dropping the stream clears its cursor");

        let hash_scan = table.hash_scan(b"", b"", b"", ScanOptions::default());
        futures::pin_mut!(hash_scan);
        let first = hash_scan.next().await.unwrap().unwrap_err();
        assert_eq!(
            first.code(),
            Some(ErrorCode::InvalidArgument),
            "empty hash key is refused locally"
        );
        assert!(hash_scan.next().await.is_none());
    })
    .await;
}

// Proves the shell's one-command mode (-e) exits zero on success and
// non-zero on a parse error or a server error, over the scripted server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_execute_exit_codes() {
    bounded(async {
        let server = TestServer::start(|_, _, request| match request {
            Request::Get(key) => Action::Reply(Ok(ResponseBody::Value(value_of(&key.sort_key)))),
            _ => Action::Reply(Err(OpError::new(ErrorCode::Busy, "try later"))),
        })
        .await;
        let run = |line: &str| {
            markab::shell::run(markab::shell::ShellArgs {
                node: Some(server.address.clone()),
                table: Some("t".into()),
                execute: Some(line.to_string()),
                timeout_ms: 2000,
                ..markab::shell::ShellArgs::default()
            })
        };
        let success = std::process::ExitCode::SUCCESS;
        assert_eq!(run(r#"get "h k" s\x01"#).await.unwrap(), success);
        assert_ne!(run("get h").await.unwrap(), success, "missing argument");
        assert_ne!(run("del h s").await.unwrap(), success, "server error");
        assert!(server
            .received()
            .iter()
            .any(|(_, r)| matches!(r, Request::Get(key) if key.hash_key == b"h k" && key.sort_key == b"s\x01")));
    })
    .await;
}

// ---- Meta mode: a scripted fake meta in front of fake nodes ----

fn is_get(request: &Request) -> bool {
    matches!(request, Request::Get(_))
}

fn is_set(request: &Request) -> bool {
    matches!(request, Request::Set { .. })
}

fn is_query_route(request: &Request) -> bool {
    matches!(request, Request::QueryRoute { .. })
}

/// A fake node that serves every request: get answers `value_of(sort_key)`,
/// everything else `Done`.
async fn data_node() -> TestServer {
    TestServer::start(|_, _, request| match request {
        Request::Get(key) => Action::Reply(Ok(ResponseBody::Value(value_of(&key.sort_key)))),
        _ => Action::Reply(Ok(ResponseBody::Done)),
    })
    .await
}

/// A fake node that no longer hosts anything: every request is answered
/// `NOT_HOSTED` (not executed).
async fn not_hosting_node() -> TestServer {
    TestServer::start(|_, _, _| {
        Action::Reply(Err(OpError::new(
            ErrorCode::NotHosted,
            "partition moved away",
        )))
    })
    .await
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A fake meta whose n-th `QueryRoute` for table `t` points every partition
/// at `routes[n]`'s address with its app id (the last entry from then on);
/// other tables are unknown.
async fn scripted_meta(routes: Vec<(String, i32)>) -> TestServer {
    let queries = AtomicUsize::new(0);
    TestServer::start_meta(move |_, _, request| match request {
        Request::QueryRoute { table } if table == "t" => {
            let query = queries.fetch_add(1, Ordering::SeqCst);
            let (address, app_id) = &routes[query.min(routes.len() - 1)];
            Action::Reply(Ok(ResponseBody::Route(route_with_app_id(
                address, table, *app_id,
            ))))
        }
        Request::QueryRoute { table } => Action::Reply(Err(OpError::new(
            ErrorCode::UnknownTable,
            format!("no table named {table}"),
        ))),
        other => Action::Reply(Err(OpError::new(
            ErrorCode::InvalidArgument,
            format!("unscripted {}", other.name()),
        ))),
    })
    .await
}

async fn meta_client(meta: &TestServer, options: ClientOptions) -> Client {
    Client::connect_meta(std::slice::from_ref(&meta.address), options)
        .await
        .unwrap()
}

// Proves that a NOT_HOSTED answer (the request was not executed) makes the
// client refresh the route from meta and retry, even for a write, and that
// the refreshed route is cached for later requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_hosted_refreshes_route_and_retries() {
    bounded(async {
        let stale = not_hosting_node().await;
        let fresh = data_node().await;
        let meta =
            scripted_meta(vec![(stale.address.clone(), 7), (fresh.address.clone(), 7)]).await;
        let client = meta_client(&meta, ClientOptions::default()).await;
        let table = client.open_table("t").await.unwrap();
        assert_eq!(table.route().partitions[0].address, stale.address);

        table.set(b"h", b"s", b"v", 0).await.unwrap();
        assert_eq!(stale.count(is_set), 1);
        assert_eq!(fresh.count(is_set), 1, "retried once at the new primary");
        assert_eq!(meta.count(is_query_route), 2, "open, then one refresh");

        assert_eq!(table.get(b"h", b"k").await.unwrap(), Some(value_of(b"k")));
        assert_eq!(
            meta.count(is_query_route),
            2,
            "the refreshed route is cached"
        );
        assert_eq!(stale.count(is_get), 0);
        assert_eq!(table.route().partitions[0].address, fresh.address);
        // Another handle of the same table shares the refreshed route.
        let again = client.open_table("t").await.unwrap();
        assert_eq!(again.route().partitions[0].address, fresh.address);
    })
    .await;
}

// Proves the retries are bounded: when meta keeps routing to a node that
// answers NOT_HOSTED, the operation makes ROUTED_ATTEMPTS_MAX attempts,
// refreshes between them (rate-limited, with backoff), then fails with the
// node's error well within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_attempts_are_bounded() {
    bounded(async {
        let stale = not_hosting_node().await;
        let meta = scripted_meta(vec![(stale.address.clone(), 7)]).await;
        let client = meta_client(&meta, ClientOptions::default()).await;
        let table = client.open_table("t").await.unwrap();

        let started = std::time::Instant::now();
        let error = table.get(b"h", b"s").await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(error.code(), Some(ErrorCode::NotHosted), "{error:?}");
        assert_eq!(stale.count(is_get), ROUTED_ATTEMPTS_MAX);
        assert_eq!(
            meta.count(is_query_route),
            ROUTED_ATTEMPTS_MAX,
            "open, then one refresh before each retry"
        );
        assert!(
            elapsed >= RETRY_BACKOFF_INITIAL + ROUTE_REFRESH_INTERVAL_MIN,
            "backoff and the refresh rate limit were waited: {elapsed:?}"
        );
    })
    .await;
}

// Proves that BUSY and NOT_ENOUGH_REPLICAS (not executed; the partition
// cannot take writes for a moment) are retried after the backoff at the
// same node without asking meta again — a write too — and that a partition
// that stays short of replicas still fails, with that error, after the
// bounded attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_refusals_are_retried_without_a_refresh() {
    bounded(async {
        let sets = Arc::new(AtomicUsize::new(0));
        let node = {
            let sets = sets.clone();
            TestServer::start(move |_, _, request| match request {
                Request::Set { key, .. } if key.hash_key == b"short" => Action::Reply(Err(
                    OpError::new(ErrorCode::NotEnoughReplicas, "one member left"),
                )),
                Request::Set { .. } => match sets.fetch_add(1, Ordering::SeqCst) {
                    0 => Action::Reply(Err(OpError::new(ErrorCode::NotEnoughReplicas, "learning"))),
                    1 => Action::Reply(Err(OpError::new(ErrorCode::Busy, "log full"))),
                    _ => Action::Reply(Ok(ResponseBody::Done)),
                },
                _ => Action::Reply(Ok(ResponseBody::Done)),
            })
            .await
        };
        let meta = scripted_meta(vec![(node.address.clone(), 7)]).await;
        let client = meta_client(&meta, ClientOptions::default()).await;
        let table = client.open_table("t").await.unwrap();

        table.set(b"h", b"s", b"v", 0).await.unwrap();
        assert_eq!(node.count(is_set), 3, "two refusals, then the write");
        assert_eq!(meta.count(is_query_route), 1, "the route was not refreshed");

        let error = table.set(b"short", b"s", b"v", 0).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(ErrorCode::NotEnoughReplicas),
            "{error:?}"
        );
        assert_eq!(node.count(is_set), 3 + ROUTED_ATTEMPTS_MAX);
        assert_eq!(meta.count(is_query_route), 1);
    })
    .await;
}

// Proves a write whose connection dies after it was sent is never retried
// (its fate is unknown): the error surfaces, the node saw it once, and the
// route is marked stale so the next operation refreshes it first; a read
// whose connection dies the same way is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_with_unknown_fate_is_not_retried() {
    bounded(async {
        let node = TestServer::start(|connection, _, request| match (connection, request) {
            (0, Request::Set { .. }) => Action::Close,
            (1, Request::Get(_)) => Action::Close,
            (_, Request::Get(key)) => {
                Action::Reply(Ok(ResponseBody::Value(value_of(&key.sort_key))))
            }
            _ => Action::Reply(Ok(ResponseBody::Done)),
        })
        .await;
        let meta = scripted_meta(vec![(node.address.clone(), 7)]).await;
        let client = meta_client(&meta, ClientOptions::default()).await;
        let table = client.open_table("t").await.unwrap();

        let error = table.set(b"h", b"s", b"v", 0).await.unwrap_err();
        assert!(matches!(error, ClientError::Io(_)), "{error:?}");
        assert_eq!(
            node.count(is_set),
            1,
            "a write of unknown fate is not retried"
        );
        assert_eq!(meta.count(is_query_route), 1, "no retry, so no refresh yet");

        assert_eq!(table.get(b"h", b"k").await.unwrap(), Some(value_of(b"k")));
        assert_eq!(
            node.count(is_get),
            2,
            "the read was retried after its connection died"
        );
        assert_eq!(
            meta.count(is_query_route),
            3,
            "a refresh for the stale route, and one before the read's retry"
        );
        assert_eq!(node.count(is_set), 1);
    })
    .await;
}

// Proves a write that times out is not retried either, and leaves the route
// marked stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_write_is_not_retried() {
    bounded(async {
        let node = TestServer::start(|_, _, request| match request {
            Request::Set { .. } => Action::Ignore,
            _ => Action::Reply(Ok(ResponseBody::Done)),
        })
        .await;
        let meta = scripted_meta(vec![(node.address.clone(), 7)]).await;
        let options = ClientOptions {
            operation_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        let client = meta_client(&meta, options).await;
        let table = client.open_table("t").await.unwrap();

        let error = table.set(b"h", b"s", b"v", 0).await.unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
        assert_eq!(node.count(is_set), 1);
        table.del(b"h", b"s").await.unwrap();
        assert_eq!(
            meta.count(is_query_route),
            2,
            "the next operation refreshed first"
        );
        assert_eq!(node.count(is_set), 1);
    })
    .await;
}

// Proves a write whose node cannot be dialed (so it provably never reached
// a node) is retried at the route meta gives next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_refreshes_and_retries_a_write() {
    bounded(async {
        let fresh = data_node().await;
        let meta = scripted_meta(vec![(dead_address().await, 7), (fresh.address.clone(), 7)]).await;
        let client = meta_client(&meta, ClientOptions::default()).await;
        let table = client.open_table("t").await.unwrap();
        table.set(b"h", b"s", b"v", 0).await.unwrap();
        assert_eq!(fresh.count(is_set), 1);
        assert_eq!(meta.count(is_query_route), 2);
    })
    .await;
}

// Proves that when a refresh shows the name now belongs to another table
// (a new app id), the handle fails with TableReplaced and open_table asks
// meta again instead of using the old cached route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_table_is_reported_and_reopened() {
    bounded(async {
        let stale = not_hosting_node().await;
        let fresh = data_node().await;
        let meta =
            scripted_meta(vec![(stale.address.clone(), 7), (fresh.address.clone(), 8)]).await;
        let client = meta_client(&meta, ClientOptions::default()).await;
        let table = client.open_table("t").await.unwrap();
        let error = table.get(b"h", b"s").await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::TableReplaced {
                    app_id: 7,
                    app_id_now: 8,
                    ..
                }
            ),
            "{error:?}"
        );
        let reopened = client.open_table("t").await.unwrap();
        assert_eq!(reopened.app_id(), 8);
        assert_eq!(
            reopened.get(b"h", b"k").await.unwrap(),
            Some(value_of(b"k"))
        );
    })
    .await;
}

// Proves connect_meta falls back past an unreachable meta, that meta's
// UNKNOWN_TABLE becomes ClientError::UnknownTable, and that connecting
// fails with Connect when no meta is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_fallback_and_unknown_table() {
    bounded(async {
        let node = data_node().await;
        let meta = scripted_meta(vec![(node.address.clone(), 7)]).await;
        let addresses = vec![dead_address().await, meta.address.clone()];
        let client = Client::connect_meta(&addresses, ClientOptions::default())
            .await
            .unwrap();
        assert!(client.is_meta_mode());
        let table = client.open_table("t").await.unwrap();
        assert_eq!(table.get(b"h", b"k").await.unwrap(), Some(value_of(b"k")));
        let missing = client.open_table("other").await;
        assert!(
            matches!(missing, Err(ClientError::UnknownTable(ref name)) if name == "other"),
            "{:?}",
            missing.err()
        );
        let nobody = Client::connect_meta(&[dead_address().await], ClientOptions::default()).await;
        assert!(
            matches!(nobody, Err(ClientError::Connect { .. })),
            "{:?}",
            nobody.err()
        );
    })
    .await;
}

fn table_info(name: &str, app_id: i32, partition_count: i32) -> TableInfo {
    TableInfo {
        app_id,
        name: name.to_string(),
        partition_count,
        replica_count: 3,
        create_time_s: 1_700_000_000,
        ..TableInfo::default()
    }
}

/// A fake meta that answers every admin request (table `dup` exists
/// already; partition counts must be powers of two) and routes table `t`
/// to `node_address`.
async fn admin_meta(node_address: String) -> TestServer {
    TestServer::start_meta(move |_, _, request| {
        let reply = match request {
            Request::QueryRoute { table } if table == "t" => {
                Ok(ResponseBody::Route(route(&node_address, table)))
            }
            Request::CreateTable(create) if create.table == "dup" => Err(OpError::new(
                ErrorCode::TableExists,
                "table dup already exists",
            )),
            Request::CreateTable(create) if create.partition_count.count_ones() != 1 => {
                Err(OpError::new(
                    ErrorCode::InvalidArgument,
                    "partition_count must be a power of two",
                ))
            }
            Request::CreateTable(create) => Ok(ResponseBody::Table(TableInfo {
                envs: create.envs.clone(),
                replica_count: create.replica_count,
                ..table_info(&create.table, 3, create.partition_count)
            })),
            Request::DropTable { .. } | Request::SetAppEnvs { .. } => Ok(ResponseBody::Done),
            Request::RecallTable { app_id, new_name } => {
                Ok(ResponseBody::Table(table_info(new_name, *app_id, 4)))
            }
            Request::ListTables { include_dropped } => {
                let mut tables = vec![table_info("t", 1, 4)];
                if *include_dropped {
                    tables.push(TableInfo {
                        status: TableStatus::Dropped,
                        drop_expire_s: 1_800_000_000,
                        ..table_info("old", 2, 4)
                    });
                }
                Ok(ResponseBody::Tables(tables))
            }
            Request::DescribeTable { table } if table == "t" => {
                Ok(ResponseBody::Description(TableDescription {
                    info: table_info("t", 1, 2),
                    partitions: (0..2)
                        .map(|partition_index| PartitionConfig {
                            partition_index,
                            ballot: 1,
                            primary: node_address.clone(),
                            secondaries: vec![],
                            learners: vec![],
                        })
                        .collect(),
                }))
            }
            Request::DescribeTable { table } | Request::GetAppEnvs { table } if table != "t" => {
                Err(OpError::new(
                    ErrorCode::UnknownTable,
                    format!("no table named {table}"),
                ))
            }
            Request::GetAppEnvs { .. } => Ok(ResponseBody::Pairs(vec![(
                "rocksdb.usage_scenario".into(),
                "normal".into(),
            )])),
            Request::ListNodes => Ok(ResponseBody::Nodes(vec![NodeInfo {
                node: node_address.clone(),
                shard_addresses: vec![node_address.clone()],
                alive: true,
                replica_count: 4,
                last_beacon_ms_ago: 10,
                ..NodeInfo::default()
            }])),
            Request::ClusterInfo => Ok(ResponseBody::Pairs(vec![
                ("meta".into(), "test".into()),
                ("node_count".into(), "1".into()),
            ])),
            other => Err(OpError::new(
                ErrorCode::InvalidArgument,
                format!("unscripted {}", other.name()),
            )),
        };
        Action::Reply(reply)
    })
    .await
}

// Proves each admin call sends its request to meta and returns meta's
// answer, that meta's refusals come back as Server errors with their code,
// that drop_table forgets the client's cached route of the table, and that
// a standalone client refuses admin calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_round_trips() {
    bounded(async {
        let node = data_node().await;
        let meta = admin_meta(node.address.clone()).await;
        let client = meta_client(&meta, ClientOptions::default()).await;

        let create = CreateTableRequest {
            table: "orders".into(),
            partition_count: 16,
            replica_count: 1,
            envs: vec![("k".into(), "v".into())],
            success_if_exist: false,
        };
        let info = client.create_table(create.clone()).await.unwrap();
        assert_eq!(
            (info.name.as_str(), info.app_id, info.partition_count),
            ("orders", 3, 16)
        );
        assert_eq!(info.envs, create.envs);
        assert!(meta.count(|r| *r == Request::CreateTable(create.clone())) == 1);

        let duplicate = client
            .create_table(CreateTableRequest {
                table: "dup".into(),
                ..create.clone()
            })
            .await
            .unwrap_err();
        assert_eq!(duplicate.code(), Some(ErrorCode::TableExists));
        assert!(
            duplicate.to_string().contains("already exists"),
            "{duplicate}"
        );

        client.open_table("t").await.unwrap();
        client.open_table("t").await.unwrap();
        assert_eq!(meta.count(is_query_route), 1, "open_table caches the route");
        client.drop_table("t", Some(60)).await.unwrap();
        client.open_table("t").await.unwrap();
        assert_eq!(
            meta.count(is_query_route),
            2,
            "drop_table forgot the cached route"
        );
        assert_eq!(
            meta.count(|r| *r
                == Request::DropTable {
                    table: "t".into(),
                    reserve_seconds: Some(60)
                }),
            1
        );
        let recalled = client.recall_table(2, "back").await.unwrap();
        assert_eq!((recalled.name.as_str(), recalled.app_id), ("back", 2));
        assert_eq!(client.list_tables(false).await.unwrap().len(), 1);
        assert_eq!(client.list_tables(true).await.unwrap().len(), 2);
        let description = client.describe_table("t").await.unwrap();
        assert_eq!(description.partitions.len(), 2);
        assert_eq!(
            client.describe_table("nope").await.unwrap_err().code(),
            Some(ErrorCode::UnknownTable)
        );
        assert_eq!(client.list_nodes().await.unwrap()[0].node, node.address);
        assert_eq!(client.cluster_info().await.unwrap()[1].1, "1");
        client
            .set_app_envs("t", vec![("a".into(), "b".into())])
            .await
            .unwrap();
        assert_eq!(client.get_app_envs("t").await.unwrap().len(), 1);
        assert_eq!(
            client.set_app_envs("t", vec![]).await.unwrap_err().code(),
            Some(ErrorCode::InvalidArgument),
            "an empty env list is refused locally"
        );

        let standalone = Client::connect(&node.address, ClientOptions::default())
            .await
            .unwrap();
        let refused = standalone.cluster_info().await.unwrap_err();
        assert!(
            matches!(refused, ClientError::NeedsMeta { .. }),
            "{refused:?}"
        );
    })
    .await;
}

// Proves the shell's admin commands in -e mode against the fake meta: exit
// zero on success, non-zero on meta's refusals, on data commands without a
// table and on table-scoped admin commands without a table; and data
// commands routed through meta with --table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_admin_commands_exit_codes() {
    bounded(async {
        let node = data_node().await;
        let meta = admin_meta(node.address.clone()).await;
        let run = |table: Option<&str>, line: &str| {
            markab::shell::run(markab::shell::ShellArgs {
                meta: vec![meta.address.clone()],
                table: table.map(str::to_string),
                execute: Some(line.to_string()),
                timeout_ms: 2000,
                ..markab::shell::ShellArgs::default()
            })
        };
        let success = std::process::ExitCode::SUCCESS;
        for line in [
            "create orders -p 16 -r 1 -e a=1",
            "ls",
            "ls -a",
            "nodes",
            "cluster_info",
            "app t",
            "drop t --reserve-seconds 60",
            "recall 2 back",
            "use t",
            "help",
        ] {
            assert_eq!(run(None, line).await.unwrap(), success, "{line}");
        }
        for line in [
            "create dup",
            "create odd -p 3",
            "app nope",
            "get h s",
            "set_app_envs k v",
            "get_app_envs",
            "recall x",
        ] {
            assert_ne!(run(None, line).await.unwrap(), success, "{line}");
        }
        assert_eq!(run(Some("t"), "get h k").await.unwrap(), success);
        assert_eq!(run(Some("t"), "set_app_envs k v").await.unwrap(), success);
        assert_eq!(run(Some("t"), "get_app_envs").await.unwrap(), success);
        assert!(
            run(Some("nope"), "get h k").await.is_err(),
            "unknown --table"
        );
        assert_eq!(node.count(is_get), 1);
        assert_eq!(
            meta.count(
                |r| matches!(r, Request::CreateTable(c) if c.table == "orders"
                && c.partition_count == 16 && c.replica_count == 1
                && c.envs == vec![("a".to_string(), "1".to_string())])
            ),
            1
        );
        assert_eq!(
            meta.count(
                |r| matches!(r, Request::SetAppEnvs { table, envs } if table == "t"
                && envs == &vec![("k".to_string(), "v".to_string())])
            ),
            1
        );
    })
    .await;
}
