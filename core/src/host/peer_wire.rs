//! The wire form of replica-to-replica messages: the mapping between
//! [`PeerMessage`] (the replica core's terms), the host's copy chunks and
//! the wire's [`PeerRequest`].

use markab_wire::{PeerKind, PeerMutation, PeerRequest};

use crate::replication::messages::{Mutation, PeerMessage, PrepareError};

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
/// "Learning"): host business, never fed to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyChunk {
    pub ballot: u64,
    /// The decree the copy starts at (the primary's applied decree then).
    pub decree: u64,
    /// The learner's commit point in the request this copy answers: a
    /// learner that holds more by now takes no part of it
    /// (**copy-answers-its-request**).
    pub learner_committed: u64,
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
        error_value: chunk.learner_committed,
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
            learner_committed: request.error_value,
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
            learner_committed: 17,
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
