//! The log record of a replicated mutation, and the gathering of the
//! committed mutations a learner misses from a primary's log records.

use std::collections::BTreeMap;

use markab_wire::OpError;

use crate::replication::messages::{Ballot, Decree, Mutation};
use crate::storage::WriteBatch;

/// Bytes in front of each log record's payload: the primary's commit point
/// when it made the mutation (little-endian u64).
pub const COMMITTED_PREFIX_BYTES: usize = 8;

/// The log payload of a mutation: its commit point, then the encoded write
/// batch (nothing for the empty write).
pub fn log_payload(mutation: &Mutation) -> Vec<u8> {
    let mut payload = Vec::with_capacity(COMMITTED_PREFIX_BYTES + mutation.payload.len());
    payload.extend_from_slice(&mutation.committed_decree.to_le_bytes());
    payload.extend_from_slice(&mutation.payload);
    payload
}

/// The mutation of a log record of `ballot` and `decree`, or why it is
/// malformed.
pub fn mutation_of_record(ballot: i64, decree: i64, payload: &[u8]) -> Result<Mutation, String> {
    if payload.len() < COMMITTED_PREFIX_BYTES || ballot < 0 || decree <= 0 {
        return Err(format!(
            "log record (ballot {ballot}, decree {decree}) of {} bytes is malformed",
            payload.len()
        ));
    }
    let (prefix, batch) = payload.split_at(COMMITTED_PREFIX_BYTES);
    Ok(Mutation {
        ballot: ballot as Ballot,
        decree: decree as Decree,
        committed_decree: u64::from_le_bytes(prefix.try_into().expect("8 bytes")),
        payload: batch.to_vec(),
    })
}

/// The write batch a mutation carries (the empty write carries none), with
/// the mutation's decree.
pub fn batch_of(mutation: &Mutation) -> Result<WriteBatch, OpError> {
    let mut batch = if mutation.payload.is_empty() {
        WriteBatch::new()
    } else {
        WriteBatch::decode(&mutation.payload)?
    };
    batch.set_decree(mutation.decree as i64);
    Ok(batch)
}

/// Gathers, from a partition's log records offered in log order, the
/// committed mutations from `from + 1` on, contiguous, ending at
/// `committed` or once about `bytes_max` of payload is gathered. With
/// `own_run` (the primary's run as primary began at or below `from`), only
/// records under that ballot or a later one are taken — each is final —
/// and gathering stops as soon as there is enough; otherwise a later
/// record of a decree under a higher ballot wins.
#[derive(Debug)]
pub struct LearnedGather {
    from: Decree,
    committed: Decree,
    own_run: Option<Ballot>,
    bytes_max: usize,
    logged: BTreeMap<Decree, Mutation>,
    gathered_bytes: usize,
}

impl LearnedGather {
    pub fn new(
        from: Decree,
        committed: Decree,
        own_run: Option<Ballot>,
        bytes_max: usize,
    ) -> LearnedGather {
        LearnedGather {
            from,
            committed,
            own_run,
            bytes_max,
            logged: BTreeMap::new(),
            gathered_bytes: 0,
        }
    }

    /// One log record of the partition (any decree; those outside the
    /// range are skipped, malformed ones too).
    pub fn offer(&mut self, ballot: i64, decree: i64, payload: &[u8]) {
        let Ok(decree_u) = u64::try_from(decree) else {
            return;
        };
        if decree_u <= self.from || decree_u > self.committed {
            return;
        }
        if let Some(run) = self.own_run {
            let enough = self.gathered_bytes >= self.bytes_max
                && self
                    .logged
                    .last_key_value()
                    .is_some_and(|(last, _)| decree_u > *last);
            if (ballot.max(0) as Ballot) < run || enough {
                return;
            }
        }
        let Ok(mutation) = mutation_of_record(ballot, decree, payload) else {
            return;
        };
        if self
            .logged
            .get(&decree_u)
            .is_none_or(|held| held.ballot <= mutation.ballot)
        {
            self.gathered_bytes += mutation.payload.len();
            self.logged.insert(decree_u, mutation);
        }
    }

    /// Whether reading may stop: in the primary's own run, enough bytes
    /// from `from + 1` on without a gap.
    pub fn enough(&self) -> bool {
        self.own_run.is_some()
            && self.gathered_bytes >= self.bytes_max
            && !self.logged.is_empty()
            && self
                .logged
                .keys()
                .enumerate()
                .all(|(index, decree)| *decree == self.from + 1 + index as Decree)
    }

    /// The mutations to send, or `None` when the records offered do not
    /// hold them all (a copy is needed).
    pub fn finish(mut self) -> Option<Vec<Mutation>> {
        let mut mutations = Vec::new();
        let mut bytes = 0usize;
        for decree in self.from + 1..=self.committed {
            let mutation = self.logged.remove(&decree)?;
            bytes += mutation.payload.len();
            mutations.push(mutation);
            if bytes >= self.bytes_max {
                break;
            }
        }
        Some(mutations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ballot: u64, decree: u64, committed: u64, body: &[u8]) -> (i64, i64, Vec<u8>) {
        let mutation = Mutation {
            ballot,
            decree,
            committed_decree: committed,
            payload: body.to_vec(),
        };
        (ballot as i64, decree as i64, log_payload(&mutation))
    }

    #[test]
    fn a_record_round_trips_and_a_short_one_is_refused() {
        let (ballot, decree, payload) = record(3, 9, 7, b"batch");
        let mutation = mutation_of_record(ballot, decree, &payload).unwrap();
        assert_eq!(
            (mutation.ballot, mutation.decree, mutation.committed_decree),
            (3, 9, 7)
        );
        assert_eq!(mutation.payload, b"batch");
        assert!(mutation_of_record(3, 9, &payload[..4]).is_err());
        assert!(mutation_of_record(3, 0, &payload).is_err());
    }

    #[test]
    fn the_higher_ballot_wins_and_a_gap_needs_a_copy() {
        let mut gather = LearnedGather::new(1, 3, None, 1 << 20);
        for (ballot, decree, payload) in [
            record(1, 2, 1, b"old"),
            record(2, 2, 1, b"new"),
            record(1, 2, 1, b"stale"),
            record(2, 3, 2, b"three"),
            record(2, 4, 3, b"uncommitted"),
        ] {
            gather.offer(ballot, decree, &payload);
        }
        let mutations = gather.finish().unwrap();
        let bodies: Vec<&[u8]> = mutations.iter().map(|m| m.payload.as_slice()).collect();
        assert_eq!(bodies, [b"new".as_slice(), b"three".as_slice()]);

        let mut gap = LearnedGather::new(0, 3, None, 1 << 20);
        let (ballot, decree, payload) = record(1, 2, 1, b"two");
        gap.offer(ballot, decree, &payload);
        assert!(gap.finish().is_none());
    }

    #[test]
    fn the_own_run_stops_once_it_has_enough() {
        let mut gather = LearnedGather::new(5, 100, Some(4), 8);
        let (ballot, decree, payload) = record(3, 6, 5, b"older-run");
        gather.offer(ballot, decree, &payload);
        assert!(!gather.enough());
        for decree in 6..=7 {
            let (ballot, decree, payload) = record(4, decree, 5, b"12345");
            gather.offer(ballot, decree, &payload);
        }
        assert!(gather.enough());
        let (ballot, decree, payload) = record(4, 8, 5, b"more");
        gather.offer(ballot, decree, &payload);
        let decrees: Vec<u64> = gather.finish().unwrap().iter().map(|m| m.decree).collect();
        assert_eq!(decrees, [6, 7]);
    }
}
