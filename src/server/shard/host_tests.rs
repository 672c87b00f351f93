//! Tests of the node's replication host on a real shard — glommio, the
//! mutation log on disk, RocksDB — driven through its inputs: an
//! assignment from meta and peer messages from a primary that does not
//! exist (what the host sends back goes nowhere).

use std::path::Path;
use std::sync::Arc;

use glommio::LocalExecutorBuilder;
use markab_shards::tuning::Tuning;
use markab_wire::{Gpid, ReplicaAssignment};

use markab_core::host::peer_wire::{self as peer, CopyChunk};
use markab_core::host::record::{mutation_of_record, LearnedGather};
use markab_core::host::registry::{PrimaryGrant, ShardAck};
use markab_core::host::LearnRead;

use super::*;
use crate::replication::messages::{Ballot, Decree, Mutation, PeerMessage};
use crate::storage::WriteBatch;

/// This node: its shard 0's address, which is also its id.
const ME: &str = "127.0.0.1:1";
/// The partition's primary, where nothing listens.
const PRIMARY: &str = "127.0.0.1:9";
const GPID: Gpid = Gpid {
    app_id: 1,
    partition_index: 0,
};

fn run<F>(test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(test)
        .expect("an executor")
        .join()
        .expect("the test ran");
}

/// A one-shard cluster-mode node in `dir`, its log in segments of
/// `segment_bytes`.
async fn shard(dir: &Path, segment_bytes: u64) -> ShardState {
    let layout = Arc::new(NodeLayout::new(
        NodeMode::Cluster,
        vec![ME.parse().unwrap()],
    ));
    let tuning = Tuning {
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 8 << 20,
        log_segment_bytes: segment_bytes,
        ..Tuning::default()
    };
    ShardState::open(0, layout, dir, &tuning, ReplicationSettings::default())
        .await
        .expect("the shard opens")
}

/// A one-shard node hosting partition 1.0 as a learner at ballot 2.
async fn learner(dir: &Path) -> ShardState {
    let state = shard(dir, Tuning::default().log_segment_bytes).await;
    state.assign(&assignment(2, PRIMARY, &[ME], 2));
    state
}

/// Meta's assignment of partition 1.0 at `ballot`: `primary`, no
/// secondaries, `learners`, each listening at its name.
fn assignment(
    ballot: i64,
    primary: &str,
    learners: &[&str],
    replica_count: i32,
) -> ReplicaAssignment {
    let names =
        |names: &[&str]| -> Vec<String> { names.iter().map(|name| name.to_string()).collect() };
    ReplicaAssignment {
        table: "t".into(),
        app_id: GPID.app_id,
        partition_index: GPID.partition_index,
        partition_count: 1,
        shard: 0,
        ballot,
        primary: primary.into(),
        secondaries: Vec::new(),
        member_addresses: names(&[&[primary], learners].concat()),
        learners: names(learners),
        replica_count,
        handoff_to: String::new(),
        split_child: false,
    }
}

fn core_of(state: &ShardState) -> (Decree, Option<Decree>) {
    let host = state.host();
    let core = host.replica(GPID).expect("hosted").core();
    (core.last_committed(), core.copying())
}

fn applied(state: &ShardState) -> Decree {
    state.host().replica(GPID).expect("hosted").applied()
}

fn put(key: &[u8]) -> Vec<u8> {
    let mut batch = WriteBatch::new();
    batch.put(key.to_vec(), key.to_vec());
    batch.encode()
}

fn has(state: &ShardState, key: &[u8]) -> bool {
    state
        .host()
        .replica(GPID)
        .expect("hosted")
        .partition
        .engine()
        .get(key)
        .expect("a read")
        .is_some()
}

fn learned(state: &ShardState, committed_decree: Decree, decrees: std::ops::RangeInclusive<u64>) {
    let mutations = decrees
        .map(|decree| Mutation {
            ballot: 1,
            decree,
            committed_decree: decree - 1,
            payload: put(format!("m{decree}").as_bytes()),
        })
        .collect();
    let message = PeerMessage::LearnResponse {
        ballot: 2,
        committed_decree,
        mutations,
    };
    state.on_peer(GPID, peer::to_wire(message, PRIMARY, PRIMARY));
}

fn chunk(state: &ShardState, decree: Decree, sequence: u64, last: bool, keys: &[&[u8]]) {
    let learner_committed = core_of(state).0;
    answering_chunk(state, learner_committed, decree, sequence, last, keys);
}

/// A copy chunk answering a learn request made at `learner_committed`.
fn answering_chunk(
    state: &ShardState,
    learner_committed: Decree,
    decree: Decree,
    sequence: u64,
    last: bool,
    keys: &[&[u8]],
) {
    let mut batch = WriteBatch::new();
    for key in keys {
        batch.put(key.to_vec(), key.to_vec());
    }
    let chunk = CopyChunk {
        ballot: 2,
        decree,
        learner_committed,
        sequence,
        last,
        batch: batch.encode(),
    };
    state.on_peer(GPID, peer::chunk_to_wire(chunk, PRIMARY, PRIMARY));
}

// A copy in progress is known to the core (**copy-known-to-core**), and one
// that will not complete leaves storage empty, durably, with the core
// agreeing. The learner first learns decrees 1..=3; chunk 0 of a copy at
// decree 40 makes the marker durable, clears storage and drops the core's
// commit point to 0; a learn response arriving meanwhile is not applied on
// top of the half-installed copy; a lost chunk aborts the copy (storage
// empty at decree 0, marker gone, the core at 0 and no longer copying); a
// complete copy then installs at its decree. (Before, the core heard of a
// copy only at its last chunk: a copy cut short left a cleared engine the
// core still took for decrees 1..=3, later learned mutations were applied
// on top, and the learner could be promoted missing data.)
#[test]
fn an_interrupted_copy_leaves_storage_and_core_agreeing() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = learner(dir.path()).await;
        learned(&state, 3, 1..=3);
        assert_eq!(core_of(&state), (3, None));
        assert!(has(&state, b"m1") && has(&state, b"m3"));
        let marker = replica_dir(dir.path(), GPID).join(COPY_MARKER_FILE);

        chunk(&state, 40, 0, false, &[b"c1"]);
        assert_eq!(core_of(&state), (0, Some(40)));
        assert!(marker.exists());
        assert!(!has(&state, b"m1"), "chunk 0 cleared the records");
        assert!(has(&state, b"c1"));
        learned(&state, 45, 1..=3);
        assert_eq!(core_of(&state), (0, Some(40)), "nothing learned mid-copy");
        assert!(!has(&state, b"m1"));

        chunk(&state, 40, 2, false, &[b"c3"]);
        assert_eq!(core_of(&state), (0, None), "the copy was aborted");
        assert!(!marker.exists());
        assert!(!has(&state, b"c1"), "storage is empty again");
        assert!(!has(&state, b"c3"));
        {
            let host = state.host();
            let engine = host.replica(GPID).unwrap().partition.engine();
            assert_eq!(engine.applied_decree().unwrap(), 0);
            assert_eq!(engine.flushed_decree().unwrap(), 0, "durably");
        }

        chunk(&state, 50, 0, false, &[b"d1"]);
        chunk(&state, 50, 1, true, &[b"d2"]);
        assert_eq!(core_of(&state), (50, None));
        assert!(has(&state, b"d1") && has(&state, b"d2"));
        assert!(!marker.exists());
        assert_eq!(applied(&state), 50);
        state.close().await;
    });
}

// A copy answers the learn request it was queued for, and a learner that
// holds more by then takes no part of it (**copy-answers-its-request**):
// the learner asked at commit point 0, its copy waited behind others
// (copies are paced and bounded per node), and meanwhile it learned
// decrees 1..=3 from the primary's log and cache — enough for the primary
// to ask meta to promote it. The copy's chunks then leave its records and
// commit point alone. (Before, chunk 0 emptied its storage just as meta
// made it a secondary: a secondary holding nothing, found by a loaded
// rebalance as a window-bound assertion.)
#[test]
fn a_copy_for_an_older_request_leaves_the_learner_alone() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = learner(dir.path()).await;
        learned(&state, 3, 1..=3);
        assert_eq!(core_of(&state), (3, None));
        answering_chunk(&state, 0, 40, 0, false, &[b"c1"]);
        answering_chunk(&state, 0, 40, 1, true, &[b"c2"]);
        assert_eq!(core_of(&state), (3, None), "the copy was not taken");
        assert!(has(&state, b"m1") && has(&state, b"m3"));
        assert!(!has(&state, b"c1") && !has(&state, b"c2"));
        assert_eq!(applied(&state), 3);
        let marker = replica_dir(dir.path(), GPID).join(COPY_MARKER_FILE);
        assert!(!marker.exists());

        // A copy answering where it stands now is taken.
        answering_chunk(&state, 3, 50, 0, false, &[b"d1"]);
        answering_chunk(&state, 3, 50, 1, true, &[b"d2"]);
        assert_eq!(core_of(&state), (50, None));
        assert!(has(&state, b"d1") && !has(&state, b"m1"));
        state.close().await;
    });
}

// A learned mutation is logged claiming commitment up to its own decree
// only (**learned-claims-itself**), in the node's real log record format:
// a response cut short carries a commit point far beyond it.
#[test]
fn learned_records_are_logged_with_their_own_commit_point() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = learner(dir.path()).await;
        learned(&state, 100, 1..=2);
        assert_eq!(core_of(&state), (2, None));
        let log_dir = log_dir(dir.path(), 0);
        state.close().await;
        let mut claimed = Vec::new();
        markab_shards::log::recover(&log_dir, &mut |header, payload, _| {
            let mutation = mutation_of_record(header.ballot, header.decree, payload).unwrap();
            claimed.push((mutation.decree, mutation.committed_decree));
        })
        .unwrap();
        assert_eq!(claimed, vec![(1, 1), (2, 2)]);
    });
}

/// The learner the primary tests copy to.
const LEARNER: &str = "127.0.0.1:5";

/// A one-shard node, primary of partition 1.0 at `ballot` with `learners`
/// (none acked, so it commits alone), its log in 64 KiB segments, its
/// durability pump running, and a lease.
async fn primary(dir: &Path, ballot: i64, learners: &[&str]) -> Rc<ShardState> {
    let state = Rc::new(shard(dir, markab_shards::log::SEGMENT_BYTES_MIN).await);
    let pump = state.clone();
    glommio::spawn_local(async move { pump.durability_pump().await }).detach();
    reconfigure_primary(&state, ballot, learners);
    state
}

fn reconfigure_primary(state: &ShardState, ballot: i64, learners: &[&str]) {
    state.assign(&assignment(ballot, ME, learners, 3));
    // A lease that does not expire (meta granting no leases).
    state.apply_ack(ShardAck {
        leases: vec![PrimaryGrant {
            gpid: GPID,
            ballot: ballot as Ballot,
            handoff_to: String::new(),
        }],
        ..ShardAck::default()
    });
}

/// Writes `count` records of 2 KiB through the primary's write path.
async fn write_records(state: &ShardState, count: usize) {
    for index in 0..count {
        let request = markab_wire::Request::Set {
            key: markab_wire::Key::new(b"h".to_vec(), format!("{index:06}").into_bytes()),
            value: vec![b'v'; 2048],
            ttl_seconds: 0,
        };
        state
            .serve_write(GPID, &request)
            .await
            .expect("the write commits");
    }
}

fn committed(state: &ShardState) -> Decree {
    state
        .host()
        .replica(GPID)
        .expect("hosted")
        .core()
        .last_committed()
}

// A primary answers a learner at or above where its run as primary began
// from its own records only, stopping once the response is full
// (**learner-reads-bounded**): with two segments at the end of the log
// deleted from disk, the read still succeeds (it never reached them) and
// returns a contiguous run of records from the learner's point, never an
// older ballot's record; the full read, used below that point, needs every
// segment and fails. After a copy the learner's point is the copy's decree,
// so catching up never needs the whole log (before, every log answer read
// every segment above the learner, and past 64 MiB it sent another copy —
// a large, busy partition could copy forever).
#[test]
fn a_learner_above_the_primary_s_run_is_read_only_as_far_as_needed() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = primary(dir.path(), 2, &[]).await;
        write_records(&state, 300).await;
        let last = committed(&state);
        assert_eq!(last, 300);
        let since = state.host().replica(GPID).unwrap().core().primary_since();
        assert_eq!(since, Some((2, 0)));
        let segments = state.log.segments();
        assert!(segments.len() > 6, "{} segments", segments.len());
        for segment in &segments[segments.len() - 3..segments.len() - 1] {
            std::fs::remove_file(&segment.path).unwrap();
        }
        let stream = (GPID.app_id, GPID.partition_index);
        let gather = |own_run| LearnedGather::new(10, last, own_run, 32 * 1024);
        let read = read_learned(&segments, stream, gather(Some(2))).unwrap();
        let mutations = read.expect("the log holds decree 11 on");
        let decrees: Vec<Decree> = mutations.iter().map(|m| m.decree).collect();
        assert_eq!(decrees.first(), Some(&11));
        assert!(decrees.windows(2).all(|pair| pair[1] == pair[0] + 1));
        assert!(decrees.len() < 30, "{} mutations", decrees.len());
        assert!(mutations.iter().all(|m| m.ballot == 2));
        assert!(read_learned(&segments, stream, gather(None)).is_err());
        state.close().await;
    });
}

// A primary sends no copy queued for a learner that has learned from its
// stream since (**copy-answers-its-request**: the learner would refuse
// it): the learner asked at 0 and needed a copy; before the copy's turn it
// asked again from where the primary commits, was answered from memory
// and joined the stream. The queued copy is dropped, not sent.
// (`a_copy_pins_the_log_until_its_learner_leaves` sends one that is not.)
#[test]
fn a_queued_copy_is_dropped_once_its_learner_joined_the_stream() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = primary(dir.path(), 2, &[LEARNER]).await;
        write_records(&state, 5).await;
        let learner = state.host().node_id(LEARNER);
        let job = LearnRead {
            gpid: GPID,
            to: learner,
            ballot: 2,
            learner_committed: 0,
        };
        state.host().answer_learner(job, Ok(None));
        let request = PeerMessage::LearnRequest {
            ballot: 2,
            learner_committed: committed(&state),
        };
        state.on_peer(GPID, peer::to_wire(request, LEARNER, LEARNER));
        assert!(state.host().next_copy().is_none(), "the stale copy is sent");

        state.close().await;
    });
}

// A copy pins the primary's log above its decree (**copy-pins-log**): log
// GC keeps every record the learner will catch up from after the copy —
// flushed or not — while it is a learner of this primary, and collects
// them once it is not. (Before, log GC ignored what learners needed: by
// the time a long copy was installed, the records after its decree were
// gone and the learner needed another copy.)
#[test]
fn a_copy_pins_the_log_until_its_learner_leaves() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = primary(dir.path(), 2, &[LEARNER]).await;
        write_records(&state, 50).await;
        // The learner needs a copy: it starts at decree 50 and pins the
        // log above it.
        let learner = state.host().node_id(LEARNER);
        let job = LearnRead {
            gpid: GPID,
            to: learner,
            ballot: 2,
            learner_committed: 0,
        };
        state.host().answer_learner(job, Ok(None));
        let copy = state.host().next_copy().expect("a copy is queued");
        assert_eq!(copy.decree, 50);
        write_records(&state, 250).await;
        state
            .host()
            .replica(GPID)
            .unwrap()
            .partition
            .engine()
            .flush()
            .unwrap();
        state.collect_log_garbage(u64::MAX).unwrap();
        let stream = (GPID.app_id, GPID.partition_index);
        let last = committed(&state);
        let read = |state: &ShardState| {
            let gather = LearnedGather::new(50, last, Some(2), 1 << 20);
            read_learned(&state.log.segments(), stream, gather).unwrap()
        };
        assert!(
            read(&state).is_some(),
            "the log above the copy's decree is kept"
        );
        // The learner is removed: the pin goes and GC collects.
        reconfigure_primary(&state, 3, &[]);
        state.collect_log_garbage(u64::MAX).unwrap();
        assert_eq!(state.host().copy_pins().count(), 0);
        assert!(read(&state).is_none(), "collected once the learner left");
        state.close().await;
    });
}

// A write whose log record could not fit the shard's log (its segments
// are 64 KiB here) is refused `REQUEST_TOO_LARGE` before it gets a decree,
// and the partition goes on taking writes. (A record the log refuses after
// the core gave it a decree would leave that decree undurable for good.)
#[test]
fn a_write_too_large_for_the_log_is_refused_before_its_decree() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = primary(dir.path(), 2, &[]).await;
        let request = |bytes: usize| markab_wire::Request::Set {
            key: markab_wire::Key::new(b"h".to_vec(), b"s".to_vec()),
            value: vec![b'v'; bytes],
            ttl_seconds: 0,
        };
        let refused = state.serve_write(GPID, &request(100 * 1024)).await;
        let error = refused.expect_err("a record larger than a segment");
        assert_eq!(
            error.code,
            markab_wire::ErrorCode::RequestTooLarge,
            "{error:?}"
        );
        assert_eq!(committed(&state), 0, "no decree was given");
        state
            .serve_write(GPID, &request(1024))
            .await
            .expect("a small write still commits");
        assert_eq!(committed(&state), 1);
        state.close().await;
    });
}

// A replica found with the copy marker (a copy from a primary was being
// installed when the node stopped) drops the partial copy at open: storage
// starts empty, the marker goes, and replay brings back what the log holds
// (here decrees 1..=3, learned before the copy began); nothing of the
// partial copy survives.
#[test]
fn a_partly_installed_copy_is_dropped_at_open() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = learner(dir.path()).await;
        learned(&state, 3, 1..=3);
        chunk(&state, 40, 0, false, &[b"c1"]);
        let marker = replica_dir(dir.path(), GPID).join(COPY_MARKER_FILE);
        assert!(marker.exists() && has(&state, b"c1") && !has(&state, b"m1"));
        state.close().await;
        drop(state);
        let state = shard(dir.path(), Tuning::default().log_segment_bytes).await;
        assert!(!marker.exists());
        assert!(!has(&state, b"c1"), "the partial copy is gone");
        assert_eq!(applied(&state), 3, "the log's decrees are replayed");
        assert!(has(&state, b"m1") && has(&state, b"m3"));
        state.close().await;
    });
}

// The last accepted ballot survives in the replica's directory.
#[test]
fn ballot_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(io::persisted_ballot(dir.path()), Ok(0));
    io::persist_ballot(dir.path(), 12).unwrap();
    io::persist_ballot(dir.path(), 13).unwrap();
    assert_eq!(io::persisted_ballot(dir.path()), Ok(13));
    std::fs::write(dir.path().join(BALLOT_FILE), "x").unwrap();
    assert!(io::persisted_ballot(dir.path()).is_err());
}

// A replica whose storage came from a copy at decree D has no trustworthy
// log records at or below D: what its log holds there may be its own older,
// never-committed records (**log-floor**). As primary it answers a learner
// below D with a copy, never from its log — also after a restart. (Found
// by the simulator: a primary answered a learner from a stale record at
// the decree of a copy it had installed, and the learner applied a
// different payload there than its peers.)
#[test]
fn a_primary_never_answers_a_learner_from_below_its_copy() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = learner(dir.path()).await;
        learned(&state, 3, 1..=3);
        // A Prepare of decree 4 that never commits: logged here.
        let stale = Mutation {
            ballot: 2,
            decree: 4,
            committed_decree: 3,
            payload: put(b"stale4"),
        };
        let prepare = PeerMessage::Prepare {
            ballot: 2,
            mutation: stale,
            committed_decree: 3,
        };
        state.on_peer(GPID, peer::to_wire(prepare, PRIMARY, PRIMARY));
        // The primary sends a copy at decree 4 (holding the committed 4),
        // then decrees 5 and 6 are learned from it.
        chunk(&state, 4, 0, false, &[b"real4"]);
        chunk(&state, 4, 1, true, &[]);
        learned(&state, 6, 5..=6);
        assert_eq!(core_of(&state), (6, None));
        let learner = state.host().node_id(LEARNER);
        let job = |ballot, learner_committed| LearnRead {
            gpid: GPID,
            to: learner,
            ballot,
            learner_committed,
        };
        reconfigure_primary(&state, 3, &[LEARNER]);
        assert_eq!(state.host().learn_plan(&job(3, 3)), None, "below the copy");
        assert!(state.host().learn_plan(&job(3, 4)).is_some());
        state.close().await;
        drop(state);
        let state = shard(dir.path(), Tuning::default().log_segment_bytes).await;
        reconfigure_primary(&state, 4, &[LEARNER]);
        let learner = state.host().node_id(LEARNER);
        let job = LearnRead {
            gpid: GPID,
            to: learner,
            ballot: 4,
            learner_committed: 3,
        };
        assert_eq!(state.host().learn_plan(&job), None, "after a restart too");
        state.close().await;
    });
}

// A ballot the replica cannot record stops it before anything happens
// under that ballot (**stop-on-failure**): assigned primary at ballot 2
// while its ballot file cannot be written (a directory squats the
// temporary file's name), it logs nothing, takes no lease and answers
// writes `STORAGE_ERROR`, naming the cause. (Ignoring the failure, it
// would serve as primary under a ballot a restart could forget.) Its
// beacons report it inactive at that ballot (**stopped-reports-inactive**),
// so meta fails it over rather than keep a primary that serves nothing.
#[test]
fn a_ballot_that_cannot_be_recorded_stops_the_replica() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = Rc::new(shard(dir.path(), Tuning::default().log_segment_bytes).await);
        let pump = state.clone();
        glommio::spawn_local(async move { pump.durability_pump().await }).detach();
        // Host it (inactive) first, so that its directory exists.
        state.assign(&assignment(1, PRIMARY, &[], 1));
        let squatter = replica_dir(dir.path(), GPID).join("ballot.tmp");
        std::fs::create_dir_all(&squatter).unwrap();
        let appended_before = state.log().appended();
        reconfigure_primary(&state, 2, &[]);
        {
            let host = state.host();
            let replica = host.replica(GPID).unwrap();
            let failure = replica.failure().expect("the replica stopped");
            assert!(failure.contains("cannot record ballot 2"), "{failure}");
            assert_eq!(replica.core().lease_until_ms(), 0, "no lease taken");
        }
        // Beacons report it inactive at the ballot it could not record:
        // meta treats it as having lost its state and fails it over.
        let reported = state.layout.registry.entry(GPID).unwrap();
        assert_eq!(reported.role, markab_wire::ReplicaRole::Inactive);
        assert_eq!(reported.ballot, 2);
        assert_eq!(state.log().appended(), appended_before, "nothing logged");
        let request = markab_wire::Request::Set {
            key: markab_wire::Key::new(b"h".to_vec(), b"s".to_vec()),
            value: b"v".to_vec(),
            ttl_seconds: 0,
        };
        let refused = state.serve_write(GPID, &request).await.unwrap_err();
        assert_eq!(
            refused.code,
            markab_wire::ErrorCode::StorageError,
            "{refused:?}"
        );
        let recorded = io::persisted_ballot(&replica_dir(dir.path(), GPID)).unwrap();
        assert!(recorded < 2, "ballot {recorded} on file");
        // The node stops on it (**disk-failure-stops-the-node**).
        let failure = state.disk_failed().await.expect("a disk failure");
        assert!(failure.contains("cannot record ballot 2"), "{failure}");
        state.close().await;
    });
}

// **no-empty-member**: a replica this node set aside (its data was damaged)
// is not created again, empty, as the primary or a secondary meta names
// the node — it would serve, or acknowledge as, a member with none of the
// partition's data — only as a learner, which copies it first. A replica
// never set aside is created for any role.
#[test]
fn a_replica_set_aside_starts_again_only_as_a_learner() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = shard(dir.path(), Tuning::default().log_segment_bytes).await;
        std::fs::create_dir_all(dir.path().join(io::DAMAGED_DIR).join("1.0-1796300000000"))
            .unwrap();
        let hosted = |state: &ShardState| state.host().replica(GPID).is_some();
        state.assign(&assignment(3, ME, &[], 3));
        assert!(!hosted(&state), "not recreated empty as the primary");
        let mut as_secondary = assignment(3, PRIMARY, &[], 3);
        as_secondary.secondaries = vec![ME.into()];
        as_secondary.member_addresses = vec![PRIMARY.into(), ME.into()];
        state.assign(&as_secondary);
        assert!(!hosted(&state), "not recreated empty as a secondary");
        assert!(!replica_dir(dir.path(), GPID).exists());
        state.assign(&assignment(4, PRIMARY, &[ME], 3));
        assert!(hosted(&state), "recreated as a learner");
        state.close().await;

        let other = tempfile::tempdir().unwrap();
        let state = shard(other.path(), Tuning::default().log_segment_bytes).await;
        state.assign(&assignment(3, ME, &[], 3));
        assert!(hosted(&state), "a replica never set aside is created");
        state.close().await;
    });
}

// Proves a dropped replica's storage is closed and deleted off the shard
// thread (**drop-off-the-shard**): the drop returns with the data still
// there, meta's assignment of the same partition is refused until the
// deletion is done and accepted after it, and a deletion a stop cut short
// is finished when the shard opens again.
#[test]
fn a_dropped_replica_is_deleted_off_the_shard_thread() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let state = shard(dir.path(), Tuning::default().log_segment_bytes).await;
        state.assign(&assignment(3, ME, &[], 1));
        let hosted = |state: &ShardState| state.host().replica(GPID).is_some();
        assert!(hosted(&state));
        let data = replica_dir(dir.path(), GPID);
        assert!(data.exists());

        state.drop_replica(GPID).unwrap();
        assert!(!hosted(&state));
        assert!(
            data.exists(),
            "closed and deleted later, not on this thread"
        );
        state.assign(&assignment(4, ME, &[], 1));
        assert!(
            !hosted(&state),
            "not hosted again while its data is deleted"
        );

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Meta repeats the assignment with every beacon ack.
        while !hosted(&state) {
            assert!(
                std::time::Instant::now() < deadline,
                "the drop never finished"
            );
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            state.assign(&assignment(4, ME, &[], 1));
        }
        assert!(hosted(&state), "hosted again once the deletion is done");
        let parked = io::dropping_dir(dir.path(), 0);
        assert_eq!(std::fs::read_dir(&parked).unwrap().count(), 0);
        state.close().await;
        drop(state);

        std::fs::create_dir_all(parked.join("1.7-1796300000000/rdb")).unwrap();
        std::fs::write(parked.join("1.7-1796300000000/rdb/000001.sst"), b"x").unwrap();
        let state = shard(dir.path(), Tuning::default().log_segment_bytes).await;
        assert!(!parked.exists(), "a cut-short deletion is finished at open");
        assert!(hosted(&state), "the replica hosted again is still there");
        state.close().await;
    });
}
