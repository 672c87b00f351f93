//! One pipelined connection to one shard listener.
//!
//! A connection has a writer task fed by a bounded channel of encoded frames
//! and a reader task that decodes response frames and completes the waiting
//! request by its request id (responses may arrive in any order). A
//! semaphore bounds the requests in flight. When either task fails, the
//! connection is marked failed, every pending request fails with that error,
//! and the owner (the `Client`) dials a fresh connection on next use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use markab_wire::codec::{decode_response, EncodeError, Encoder};
use markab_wire::frame::{FrameDecoder, MessageKind, FRAME_HEADER_BYTES};
use markab_wire::{Envelope, ErrorCode, OpError, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{ClientError, ClientOptions};

/// Bytes read from the socket per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Most bytes the writer coalesces into one `write_all`.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

thread_local! {
    /// One reusable encoder per thread: encoding happens in the caller's
    /// task, so the size bound is checked before anything is queued.
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// What a waiting request receives: the node's response, or the failure of
/// the connection it was sent on.
type Completion = Result<Response, ClientError>;

/// How a connection died; every pending request gets the matching error.
#[derive(Clone, Debug)]
enum Failure {
    Io(String),
    Protocol(String),
}

impl Failure {
    fn to_error(&self) -> ClientError {
        match self {
            Failure::Io(message) => ClientError::Io(message.clone()),
            Failure::Protocol(message) => ClientError::Protocol(message.clone()),
        }
    }
}

struct State {
    pending: HashMap<u64, oneshot::Sender<Completion>>,
    failure: Option<Failure>,
    tasks: Vec<AbortHandle>,
}

struct Shared {
    address: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single map operation), so recover.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the connection failed (first failure wins), fails every pending
    /// request and stops both tasks.
    fn fail(&self, failure: Failure) {
        let (failure, pending, tasks) = {
            let mut state = self.lock();
            let failure = state.failure.get_or_insert(failure).clone();
            (
                failure,
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.tasks),
            )
        };
        if !pending.is_empty() {
            tracing::debug!(
                address = %self.address,
                pending = pending.len(),
                ?failure,
                "connection failed"
            );
        }
        for (_, sender) in pending {
            let _ = sender.send(Err(failure.to_error()));
        }
        for task in tasks {
            task.abort();
        }
    }
}

/// The error for an operation that ran out of time.
pub(crate) fn timeout_error(operation: &'static str, timeout: Duration) -> ClientError {
    ClientError::Timeout {
        operation,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Why a request did not get a response.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The request was never handed to the connection (it was already
    /// failed): safe to retry on a fresh connection, even for a write.
    NotSent(ClientError),
    /// The request may have reached the node.
    Sent(ClientError),
}

impl CallError {
    pub(crate) fn into_error(self) -> ClientError {
        match self {
            CallError::NotSent(error) | CallError::Sent(error) => error,
        }
    }
}

/// A pipelined connection to one shard address.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    frames: mpsc::Sender<Vec<u8>>,
    in_flight: Arc<Semaphore>,
    request_id_next: AtomicU64,
    request_bytes_max: usize,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.fail(Failure::Io("connection dropped".into()));
    }
}

/// Removes a request's slot from the pending map when the waiting future
/// ends without a response (timeout or cancellation).
struct PendingSlot<'a> {
    shared: &'a Shared,
    request_id: u64,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.request_id);
    }
}

impl Connection {
    /// Dials `address` within `options.connect_timeout` and starts the
    /// reader and writer tasks.
    pub(crate) async fn dial(
        address: &str,
        options: &ClientOptions,
    ) -> Result<Connection, ClientError> {
        let connect_error = |source: std::io::Error| ClientError::Connect {
            address: address.to_string(),
            source,
        };
        let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {} ms",
                        options.connect_timeout.as_millis()
                    ),
                ))
            })?
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (read_half, write_half) = stream.into_split();

        let in_flight_max = options.in_flight_max.max(1);
        let (frames, frames_receiver) = mpsc::channel(in_flight_max);
        let shared = Arc::new(Shared {
            address: address.to_string(),
            state: Mutex::new(State {
                pending: HashMap::new(),
                failure: None,
                tasks: Vec::new(),
            }),
        });
        let writer = tokio::spawn(write_loop(shared.clone(), write_half, frames_receiver));
        let reader = tokio::spawn(read_loop(
            shared.clone(),
            read_half,
            options.response_bytes_max,
        ));
        {
            let mut state = shared.lock();
            state.tasks.push(writer.abort_handle());
            state.tasks.push(reader.abort_handle());
            if state.failure.is_some() {
                // A task failed before its handle was registered.
                writer.abort();
                reader.abort();
            }
        }
        Ok(Connection {
            shared,
            frames,
            in_flight: Arc::new(Semaphore::new(in_flight_max)),
            request_id_next: AtomicU64::new(1),
            request_bytes_max: options.request_bytes_max,
        })
    }

    /// The `host:port` this connection is dialed to.
    pub(crate) fn address(&self) -> &str {
        &self.shared.address
    }

    /// Whether the connection is still usable.
    pub(crate) fn is_open(&self) -> bool {
        self.shared.lock().failure.is_none()
    }

    /// Sends `request` with `envelope` (its request id and timeout are set
    /// here) and waits for the response until `deadline` (the operation's,
    /// shared by its retries). `timeout` is the operation's whole bound, as
    /// reported in a [`ClientError::Timeout`].
    pub(crate) async fn call(
        &self,
        mut envelope: Envelope,
        request: &Request,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let operation = request.name();
        let request_id = self.request_id_next.fetch_add(1, Ordering::Relaxed);
        envelope.request_id = request_id;
        let remaining = deadline.saturating_duration_since(Instant::now());
        // At least 1 ms: 0 would mean "no deadline" to the node.
        envelope.timeout_ms = u32::try_from(remaining.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);

        let too_large = |body_bytes: usize| {
            CallError::NotSent(ClientError::Server(OpError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "{operation} request is {body_bytes} bytes; the client's bound \
                     request_bytes_max is {}",
                    self.request_bytes_max
                ),
            )))
        };
        let mut frame = Vec::new();
        let encoded = ENCODER.with(|encoder| {
            encoder
                .borrow_mut()
                .request_frame(&envelope, request, &mut frame)
        });
        match encoded {
            Ok(()) => {}
            Err(EncodeError::TooLarge { body_bytes, .. }) => return Err(too_large(body_bytes)),
            Err(error) => {
                return Err(CallError::NotSent(ClientError::Protocol(format!(
                    "cannot encode {operation}: {error}"
                ))))
            }
        }
        let body_bytes = frame.len().saturating_sub(FRAME_HEADER_BYTES);
        if body_bytes > self.request_bytes_max {
            return Err(too_large(body_bytes));
        }

        let timed_out = || CallError::Sent(timeout_error(operation, timeout));
        let _permit: OwnedSemaphorePermit =
            match tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(CallError::NotSent(ClientError::Closed)),
                // Never sent, but the caller's time is used up.
                Err(_) => return Err(timed_out()),
            };

        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(failure) = &state.failure {
                return Err(CallError::NotSent(failure.to_error()));
            }
            state.pending.insert(request_id, sender);
        }
        let _slot = PendingSlot {
            shared: &self.shared,
            request_id,
        };
        // The channel holds at most in_flight_max frames and the permit
        // bounds in-flight requests to the same number, so this send does
        // not wait in practice.
        if self.frames.send(frame).await.is_err() {
            let failure = self.shared.lock().failure.clone();
            let error = failure.map_or(ClientError::Closed, |failure| failure.to_error());
            return Err(CallError::NotSent(error));
        }
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(error))) => Err(CallError::Sent(error)),
            Ok(Err(_)) => Err(CallError::Sent(ClientError::Io(
                "connection closed while the request was pending".into(),
            ))),
            Err(_) => Err(timed_out()),
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut socket: tokio::net::tcp::OwnedWriteHalf,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    while let Some(frame) = frames.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match frames.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Err(error) = socket.write_all(&batch).await {
            shared.fail(Failure::Io(format!("write to {}: {error}", shared.address)));
            return;
        }
    }
    // Every sender is gone: the connection was dropped.
    let _ = socket.shutdown().await;
}

async fn read_loop(
    shared: Arc<Shared>,
    mut socket: tokio::net::tcp::OwnedReadHalf,
    response_bytes_max: usize,
) {
    let mut decoder = FrameDecoder::new(response_bytes_max);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let bytes_read = match socket.read(&mut chunk).await {
            Ok(0) => {
                shared.fail(Failure::Io(format!(
                    "{} closed the connection",
                    shared.address
                )));
                return;
            }
            Ok(bytes_read) => bytes_read,
            Err(error) => {
                shared.fail(Failure::Io(format!(
                    "read from {}: {error}",
                    shared.address
                )));
                return;
            }
        };
        decoder.extend(&chunk[..bytes_read]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    shared.fail(Failure::Protocol(format!(
                        "bad frame from {}: {error}",
                        shared.address
                    )));
                    return;
                }
            };
            if frame.kind != MessageKind::Response {
                shared.fail(Failure::Protocol(format!(
                    "unexpected message kind {:?} from {}",
                    frame.kind, shared.address
                )));
                return;
            }
            let (request_id, response) = match decode_response(&frame.body) {
                Ok(decoded) => decoded,
                Err(error) => {
                    shared.fail(Failure::Protocol(format!(
                        "undecodable response from {}: {error}",
                        shared.address
                    )));
                    return;
                }
            };
            // A missing slot means the request timed out or was cancelled:
            // the late response is dropped.
            let sender = shared.lock().pending.remove(&request_id);
            if let Some(sender) = sender {
                let _ = sender.send(Ok(response));
            }
        }
    }
}
