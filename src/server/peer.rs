//! Replica-to-replica messages between nodes: the shard's outgoing links
//! and the mapping between [`PeerMessage`] (the replica core's terms) and
//! the wire's [`PeerRequest`].
//!
//! Peer messages are one-way: a `Peer` request frame is never answered. The
//! sender's timers (Prepare resend, prepare timeout, learn retry) deal with
//! losses, so a link drops what it cannot send rather than queueing without
//! bound or blocking the shard.
//!
//! Each shard keeps one link per destination address (the listener of the
//! shard that hosts the partition on the other node). A link is a task that
//! connects, then writes every queued frame, coalescing what is queued into
//! one `write_all`; on a failure it drops the connection and what is queued,
//! and reconnects on the next message.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use markab_wire::codec::Encoder;
use markab_wire::{Envelope, Gpid, PeerKind, PeerMutation, PeerRequest, Request};

use crate::replication::messages::{Mutation, PeerMessage, PrepareError};
use crate::server::connection::append_queued;

/// Frames queued on one link before new ones are dropped.
const LINK_QUEUE_MAX: usize = 4096;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connection attempt, messages to that address are dropped
/// for this long (the resend timers retry).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// A shard's outgoing peer links, by destination address.
pub struct PeerLinks {
    links: RefCell<HashMap<String, LocalSender<Vec<u8>>>>,
    encoder: RefCell<Encoder>,
}

impl Default for PeerLinks {
    fn default() -> Self {
        PeerLinks::new()
    }
}

impl PeerLinks {
    pub fn new() -> PeerLinks {
        PeerLinks {
            links: RefCell::new(HashMap::new()),
            encoder: RefCell::new(Encoder::new()),
        }
    }

    /// Queues `message` for the shard listening on `address`; drops it when
    /// the link's queue is full or the message cannot be encoded.
    pub fn send(&self, address: &str, gpid: Gpid, message: PeerRequest) {
        let envelope = Envelope {
            gpid,
            ..Envelope::default()
        };
        let mut frame = Vec::new();
        if let Err(error) =
            self.encoder
                .borrow_mut()
                .request_frame(&envelope, &Request::Peer(message), &mut frame)
        {
            tracing::warn!(%address, %error, "cannot encode a peer message");
            return;
        }
        let mut links = self.links.borrow_mut();
        if !links.contains_key(address) {
            links.insert(address.to_owned(), spawn_link(address.to_owned()));
        }
        let sender = links.get(address).expect("inserted above");
        if sender.try_send(frame).is_err() {
            // Full (dropped: the sender's timers resend) or the link task
            // ended; start a fresh link for the next message.
            if sender.is_full() {
                return;
            }
            links.remove(address);
        }
    }
}

/// Starts the task of one link and returns its queue.
fn spawn_link(address: String) -> LocalSender<Vec<u8>> {
    let (sender, receiver) = local_channel::new_bounded(LINK_QUEUE_MAX);
    glommio::spawn_local(run_link(address, receiver)).detach();
    sender
}

async fn run_link(address: String, frames: LocalReceiver<Vec<u8>>) {
    let mut stream: Option<TcpStream> = None;
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        batch.extend_from_slice(&frame);
        append_queued(&mut batch, &frames);
        if stream.is_none() {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).await {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    stream = Some(connected);
                }
                Err(error) => {
                    tracing::debug!(%address, %error, "cannot reach a peer");
                    batch.clear();
                    glommio::timer::sleep(RECONNECT_PAUSE).await;
                    // Whatever queued meanwhile is stale by the resend timers'
                    // measure; drop it too.
                    while let Some(Some(_)) = frames.recv().now_or_never() {}
                    continue;
                }
            }
        }
        let connection = stream.as_mut().expect("connected above");
        if let Err(error) = connection.write_all(&batch).await {
            tracing::debug!(%address, %error, "peer write failed; reconnecting");
            stream = None;
        }
        batch.clear();
    }
}

/// Refusal codes of a PrepareAck on the wire (0 = acked).
const PREPARE_ERROR_STALE_BALLOT: u8 = 1;
const PREPARE_ERROR_NOT_MEMBER: u8 = 2;
const PREPARE_ERROR_WRONG_PRIMARY: u8 = 3;
const PREPARE_ERROR_WINDOW_FULL: u8 = 4;

fn wire_mutation(mutation: Mutation) -> PeerMutation {
    PeerMutation {
        ballot: mutation.ballot,
        decree: mutation.decree,
        committed_decree: mutation.committed_decree,
        payload: mutation.payload,
    }
}

fn core_mutation(mutation: PeerMutation) -> Mutation {
    Mutation {
        ballot: mutation.ballot,
        decree: mutation.decree,
        committed_decree: mutation.committed_decree,
        payload: mutation.payload,
    }
}

/// The wire form of `message`, sent by node `from` from its shard at
/// `from_address`.
pub fn to_wire(message: PeerMessage, from: &str, from_address: &str) -> PeerRequest {
    let mut request = PeerRequest {
        from: from.to_owned(),
        from_address: from_address.to_owned(),
        ..PeerRequest::default()
    };
    match message {
        PeerMessage::Prepare {
            ballot,
            mutation,
            committed_decree,
        } => {
            request.kind = PeerKind::Prepare;
            request.ballot = ballot;
            request.decree = mutation.decree;
            request.committed_decree = committed_decree;
            request.mutations = vec![wire_mutation(mutation)];
        }
        PeerMessage::PrepareAck {
            ballot,
            decree,
            result,
        } => {
            request.kind = PeerKind::PrepareAck;
            request.ballot = ballot;
            request.decree = decree;
            let (error, value) = match result {
                Ok(()) => (0, 0),
                Err(PrepareError::StaleBallot { ballot }) => (PREPARE_ERROR_STALE_BALLOT, ballot),
                Err(PrepareError::NotMember) => (PREPARE_ERROR_NOT_MEMBER, 0),
                Err(PrepareError::WrongPrimary) => (PREPARE_ERROR_WRONG_PRIMARY, 0),
                Err(PrepareError::WindowFull { decree }) => (PREPARE_ERROR_WINDOW_FULL, decree),
            };
            request.error = error;
            request.error_value = value;
        }
        PeerMessage::LearnRequest {
            ballot,
            learner_committed,
        } => {
            request.kind = PeerKind::LearnRequest;
            request.ballot = ballot;
            request.decree = learner_committed;
        }
        PeerMessage::LearnResponse {
            ballot,
            committed_decree,
            mutations,
        } => {
            request.kind = PeerKind::LearnResponse;
            request.ballot = ballot;
            request.committed_decree = committed_decree;
            request.mutations = mutations.into_iter().map(wire_mutation).collect();
        }
    }
    request
}

/// One chunk of a copy of a primary's records (docs/replication.md,
/// "Learning from a copy"): host business, never fed to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyChunk {
    pub ballot: u64,
    /// The decree the copy starts at (the primary's applied decree then).
    pub decree: u64,
    /// 0, 1, ... in order; a gap aborts the copy.
    pub sequence: u64,
    pub last: bool,
    /// An encoded write batch of puts.
    pub batch: Vec<u8>,
}

/// The wire form of a copy chunk.
pub fn chunk_to_wire(chunk: CopyChunk, from: &str, from_address: &str) -> PeerRequest {
    PeerRequest {
        kind: PeerKind::CheckpointChunk,
        from: from.to_owned(),
        from_address: from_address.to_owned(),
        ballot: chunk.ballot,
        decree: chunk.decree,
        committed_decree: chunk.sequence,
        flag: chunk.last,
        data: chunk.batch,
        ..PeerRequest::default()
    }
}

/// A received peer message: for the core, or a copy chunk for the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Core(PeerMessage),
    Chunk(CopyChunk),
}

/// What a received peer message is, or why it makes no sense.
pub fn from_wire(request: PeerRequest) -> Result<Incoming, String> {
    if request.kind == PeerKind::CheckpointChunk {
        return Ok(Incoming::Chunk(CopyChunk {
            ballot: request.ballot,
            decree: request.decree,
            sequence: request.committed_decree,
            last: request.flag,
            batch: request.data,
        }));
    }
    core_message(request).map(Incoming::Core)
}

fn core_message(request: PeerRequest) -> Result<PeerMessage, String> {
    match request.kind {
        PeerKind::Prepare => {
            let mut mutations = request.mutations.into_iter();
            let (Some(mutation), None) = (mutations.next(), mutations.next()) else {
                return Err("a Prepare carries exactly one mutation".to_owned());
            };
            Ok(PeerMessage::Prepare {
                ballot: request.ballot,
                mutation: core_mutation(mutation),
                committed_decree: request.committed_decree,
            })
        }
        PeerKind::PrepareAck => {
            let result = match request.error {
                0 => Ok(()),
                PREPARE_ERROR_STALE_BALLOT => Err(PrepareError::StaleBallot {
                    ballot: request.error_value,
                }),
                PREPARE_ERROR_NOT_MEMBER => Err(PrepareError::NotMember),
                PREPARE_ERROR_WRONG_PRIMARY => Err(PrepareError::WrongPrimary),
                PREPARE_ERROR_WINDOW_FULL => Err(PrepareError::WindowFull {
                    decree: request.error_value,
                }),
                other => return Err(format!("unknown PrepareAck refusal code {other}")),
            };
            Ok(PeerMessage::PrepareAck {
                ballot: request.ballot,
                decree: request.decree,
                result,
            })
        }
        PeerKind::LearnRequest => Ok(PeerMessage::LearnRequest {
            ballot: request.ballot,
            learner_committed: request.decree,
        }),
        PeerKind::LearnResponse => Ok(PeerMessage::LearnResponse {
            ballot: request.ballot,
            committed_decree: request.committed_decree,
            mutations: request.mutations.into_iter().map(core_mutation).collect(),
        }),
        PeerKind::CheckpointChunk => Err("a copy chunk is not a core message".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_message_survives_the_wire_form() {
        let mutation = Mutation {
            ballot: 3,
            decree: 9,
            committed_decree: 7,
            payload: b"batch".to_vec(),
        };
        let mut messages = vec![
            PeerMessage::Prepare {
                ballot: 3,
                mutation: mutation.clone(),
                committed_decree: 8,
            },
            PeerMessage::LearnRequest {
                ballot: 5,
                learner_committed: 41,
            },
            PeerMessage::LearnResponse {
                ballot: 5,
                committed_decree: 9,
                mutations: vec![mutation.clone(), mutation],
            },
            PeerMessage::LearnResponse {
                ballot: 6,
                committed_decree: 0,
                mutations: Vec::new(),
            },
        ];
        for result in [
            Ok(()),
            Err(PrepareError::StaleBallot { ballot: 5 }),
            Err(PrepareError::NotMember),
            Err(PrepareError::WrongPrimary),
            Err(PrepareError::WindowFull { decree: 77 }),
        ] {
            messages.push(PeerMessage::PrepareAck {
                ballot: 4,
                decree: 12,
                result,
            });
        }
        for message in messages {
            let wire = to_wire(message.clone(), "127.0.0.1:1", "127.0.0.1:2");
            assert_eq!(wire.from, "127.0.0.1:1");
            assert_eq!(from_wire(wire).unwrap(), Incoming::Core(message));
        }
        let chunk = CopyChunk {
            ballot: 7,
            decree: 1234,
            sequence: 3,
            last: true,
            batch: b"puts".to_vec(),
        };
        let wire = chunk_to_wire(chunk.clone(), "a", "b");
        assert_eq!(from_wire(wire).unwrap(), Incoming::Chunk(chunk));
    }

    #[test]
    fn malformed_peer_messages_are_refused() {
        let two = PeerRequest {
            kind: PeerKind::Prepare,
            mutations: vec![PeerMutation::default(), PeerMutation::default()],
            ..PeerRequest::default()
        };
        assert!(from_wire(two).is_err());
        let none = PeerRequest {
            kind: PeerKind::Prepare,
            ..PeerRequest::default()
        };
        assert!(from_wire(none).is_err());
        let bad_code = PeerRequest {
            kind: PeerKind::PrepareAck,
            error: 99,
            ..PeerRequest::default()
        };
        assert!(from_wire(bad_code).is_err());
    }
}
