//! Unit tests of [`ReplicaCore`]'s rules, one rule per test.

use super::*;

const P: NodeId = NodeId(1);
const S2: NodeId = NodeId(2);
const S3: NodeId = NodeId(3);

/// The defaults, but the 400 ms prepare timeout these tests' clocks were
/// written against.
fn settings() -> ReplicationSettings {
    ReplicationSettings {
        prepare_timeout_ms: 400,
        ..ReplicationSettings::default()
    }
}

fn config(ballot: Ballot, primary: NodeId, secondaries: &[NodeId]) -> PartitionConfig {
    PartitionConfig {
        ballot,
        primary: Some(primary),
        secondaries: secondaries.to_vec(),
        learners: Vec::new(),
    }
}

fn replica(node: NodeId, config: PartitionConfig) -> ReplicaCore {
    let mut core = ReplicaCore::new(Gpid::default(), node, settings()).unwrap();
    let ballot = config.ballot;
    core.handle(Input::Config(config), 0);
    core.handle(
        Input::Lease {
            ballot,
            until_ms: 10_000,
        },
        0,
    );
    core
}

fn primary() -> ReplicaCore {
    replica(P, config(1, P, &[S2, S3]))
}

fn write(core: &mut ReplicaCore, token: Token, payload: &[u8], now_ms: u64) -> Vec<Output> {
    core.handle(
        Input::ClientWrite {
            token,
            payload: payload.to_vec(),
        },
        now_ms,
    )
}

fn ack(core: &mut ReplicaCore, from: NodeId, ballot: Ballot, decree: Decree) -> Vec<Output> {
    core.handle(
        Input::Peer {
            from,
            message: PeerMessage::PrepareAck {
                ballot,
                decree,
                result: Ok(()),
            },
        },
        1,
    )
}

fn applied(outputs: &[Output]) -> Vec<Decree> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Apply(m) => Some(m.decree),
            _ => None,
        })
        .collect()
}

fn prepares(outputs: &[Output]) -> Vec<(NodeId, Mutation, Decree)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                message:
                    PeerMessage::Prepare {
                        mutation,
                        committed_decree,
                        ..
                    },
            } => Some((*to, mutation.clone(), *committed_decree)),
            _ => None,
        })
        .collect()
}

fn prepare(ballot: Ballot, decree: Decree, committed: Decree, payload: &[u8]) -> PeerMessage {
    PeerMessage::Prepare {
        ballot,
        mutation: Mutation {
            ballot,
            decree,
            committed_decree: committed,
            payload: payload.to_vec(),
        },
        committed_decree: committed,
    }
}

// The primary logs a write, sends Prepare to every secondary, and commits in
// decree order once durable and acked by all, replying after Apply.
#[test]
fn happy_path_commits_in_decree_order() {
    let mut core = primary();
    let out = write(&mut core, 10, b"a", 1);
    assert!(matches!(&out[0], Output::AppendLog(m) if m.decree == 1 && m.ballot == 1));
    assert_eq!(prepares(&out).len(), 2);
    write(&mut core, 11, b"b", 1);
    // Decree 2 completes first: nothing commits until decree 1 does.
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 2,
        },
        2,
    );
    ack(&mut core, S2, 1, 2);
    assert!(applied(&ack(&mut core, S3, 1, 2)).is_empty());
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        2,
    );
    ack(&mut core, S2, 1, 1);
    let out = ack(&mut core, S3, 1, 1);
    assert_eq!(applied(&out), vec![1, 2]);
    let replies: Vec<&Output> = out
        .iter()
        .filter(|o| matches!(o, Output::WriteReply { .. }))
        .collect();
    assert_eq!(
        replies,
        vec![
            &Output::WriteReply {
                token: 10,
                result: Ok(1)
            },
            &Output::WriteReply {
                token: 11,
                result: Ok(2)
            }
        ]
    );
    assert_eq!(core.last_committed(), 2);
    // The commit point rides on the next Prepare.
    let out = write(&mut core, 12, b"c", 3);
    assert!(prepares(&out)
        .iter()
        .all(|(_, m, committed)| m.decree == 3 && *committed == 2));
}

// Without every secondary's ack, or without the primary's own durable
// append, nothing commits.
#[test]
fn no_commit_until_every_secondary_acked() {
    let mut core = primary();
    write(&mut core, 1, b"a", 1);
    ack(&mut core, S2, 1, 1);
    ack(&mut core, S3, 1, 1);
    assert_eq!(core.last_committed(), 0, "own append not durable yet");
    let mut core = primary();
    write(&mut core, 1, b"a", 1);
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        2,
    );
    assert!(applied(&ack(&mut core, S2, 1, 1)).is_empty());
    // An ack under another ballot does not count.
    assert!(applied(&ack(&mut core, S3, 0, 1)).is_empty());
    assert_eq!(applied(&ack(&mut core, S3, 1, 1)), vec![1]);
}

// A secondary refuses an older ballot with StaleBallot carrying its own,
// and adopts a newer ballot with its sender as primary.
#[test]
fn stale_ballot_rejected_newer_adopted() {
    let mut core = replica(S2, config(3, P, &[S2, S3]));
    let out = core.handle(
        Input::Peer {
            from: P,
            message: prepare(2, 1, 0, b"x"),
        },
        1,
    );
    assert_eq!(
        out,
        vec![Output::Send {
            to: P,
            message: PeerMessage::PrepareAck {
                ballot: 2,
                decree: 1,
                result: Err(PrepareError::StaleBallot { ballot: 3 })
            }
        }]
    );
    let out = core.handle(
        Input::Peer {
            from: S3,
            message: prepare(4, 1, 0, b"x"),
        },
        1,
    );
    assert_eq!(core.ballot(), 4);
    assert_eq!(core.config().primary, Some(S3));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::AppendLog(m) if m.decree == 1)));
    // Acked to the new primary once durable.
    let out = core.handle(
        Input::LogDurable {
            ballot: 4,
            decree: 1,
        },
        2,
    );
    assert_eq!(
        out,
        vec![Output::Send {
            to: S3,
            message: PeerMessage::PrepareAck {
                ballot: 4,
                decree: 1,
                result: Ok(())
            }
        }]
    );
    // A primary told of a newer ballot by a secondary stops serving at once
    // but keeps its waiting client until meta's configuration says who is
    // primary now.
    let stale_ack = Input::Peer {
        from: S2,
        message: PeerMessage::PrepareAck {
            ballot: 1,
            decree: 1,
            result: Err(PrepareError::StaleBallot { ballot: 2 }),
        },
    };
    let mut old = primary();
    write(&mut old, 5, b"a", 1);
    let out = old.handle(stale_ack.clone(), 2);
    assert!(out.is_empty(), "{out:?}");
    assert!(!old.is_serving(3));
    assert!(matches!(
        &write(&mut old, 6, b"b", 3)[..],
        [Output::WriteReply {
            token: 6,
            result: Err(WriteError::NotActivated)
        }]
    ));
    // Reinstated (S3 removed): the decree is re-prepared and, once durable
    // and acked under ballot 2, answers the waiting client.
    old.handle(Input::Config(config(2, P, &[S2])), 4);
    assert_eq!(old.role(), Role::Primary);
    durable(&mut old, 2, 1);
    let out = ack(&mut old, S2, 2, 1);
    assert!(out.contains(&Output::WriteReply {
        token: 5,
        result: Ok(1)
    }));
    assert!(old.is_serving(5));
    // Replaced: the waiting client learns the outcome is unknown.
    let mut replaced = primary();
    write(&mut replaced, 5, b"a", 1);
    replaced.handle(stale_ack, 2);
    let out = replaced.handle(Input::Config(config(2, S2, &[P])), 3);
    assert_eq!(replaced.role(), Role::Secondary);
    assert!(out.contains(&Output::WriteReply {
        token: 5,
        result: Err(WriteError::UnknownOutcome)
    }));
}

// A secondary applies held, durable mutations up to the piggybacked commit
// point, in order, and re-acks duplicates.
#[test]
fn secondary_commits_to_piggybacked_point() {
    let mut core = replica(S2, config(1, P, &[S2, S3]));
    // Ahead of its predecessor: not taken, the primary resends it
    // (secondary-prefix-in-order).
    assert!(core
        .handle(
            Input::Peer {
                from: P,
                message: prepare(1, 2, 0, b"b"),
            },
            1,
        )
        .is_empty());
    assert_eq!(core.last_prepared(), 0);
    for (decree, payload) in [(1, b"a"), (2, b"b")] {
        core.handle(
            Input::Peer {
                from: P,
                message: prepare(1, decree, 0, payload),
            },
            1,
        );
    }
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        1,
    );
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 2,
        },
        1,
    );
    let out = core.handle(
        Input::Peer {
            from: P,
            message: prepare(1, 3, 2, b"c"),
        },
        2,
    );
    assert_eq!(applied(&out), vec![1, 2]);
    assert_eq!(core.last_committed(), 2);
    let out = core.handle(
        Input::Peer {
            from: P,
            message: prepare(1, 1, 2, b"a"),
        },
        3,
    );
    assert!(matches!(
        &out[..],
        [Output::Send {
            message: PeerMessage::PrepareAck {
                decree: 1,
                result: Ok(()),
                ..
            },
            ..
        }]
    ));
}

// Under a newer ballot, the held mutation re-prepared keeps the decrees
// above it (they may be committed); a different mutation replaces the held
// one and drops the older-ballot decrees above it.
#[test]
fn newer_ballot_replaces_tail() {
    let mut core = replica(S2, config(1, P, &[S2, S3]));
    for (decree, payload) in [(1, b"one"), (2, b"two"), (3, b"thr")] {
        core.handle(
            Input::Peer {
                from: P,
                message: prepare(1, decree, 0, payload),
            },
            1,
        );
    }
    assert_eq!(core.last_prepared(), 3);
    // Decree 2 of ballot 2 before decree 1 of ballot 2: waits for a resend.
    assert!(core
        .handle(
            Input::Peer {
                from: S3,
                message: prepare(2, 2, 0, b"new"),
            },
            2,
        )
        .iter()
        .all(|o| !matches!(o, Output::AppendLog(_))));
    assert_eq!(
        core.last_prepared(),
        3,
        "nothing dropped by a Prepare not taken"
    );
    let out = core.handle(
        Input::Peer {
            from: S3,
            message: prepare(2, 1, 0, b"one"),
        },
        2,
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::AppendLog(m) if m.decree == 1 && m.ballot == 2)));
    assert_eq!(core.last_prepared(), 3, "a re-prepare keeps what follows");
    let out = core.handle(
        Input::Peer {
            from: S3,
            message: prepare(2, 2, 0, b"new"),
        },
        2,
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::AppendLog(m) if m.decree == 2 && m.payload == b"new")));
    assert_eq!(core.last_prepared(), 2, "decree 3 of ballot 1 dropped");
}

// Recovery keeps the same rule: a re-prepared record keeps the older
// records above it, a different one drops them.
#[test]
fn recovery_keeps_tail_behind_a_re_prepare() {
    let mutation = |ballot: Ballot, decree: Decree, payload: &[u8]| Mutation {
        ballot,
        decree,
        committed_decree: 0,
        payload: payload.to_vec(),
    };
    let log = vec![
        mutation(1, 1, b"one"),
        mutation(1, 2, b"two"),
        mutation(1, 3, b"thr"),
        mutation(2, 1, b"one"),
    ];
    let (core, replay) =
        ReplicaCore::recover(Gpid::default(), S2, settings(), 0, log.clone()).unwrap();
    assert!(replay.is_empty());
    assert_eq!(core.last_prepared(), 3);
    let mut log = log;
    log.push(mutation(2, 2, b"new"));
    let (core, _) = ReplicaCore::recover(Gpid::default(), S2, settings(), 0, log).unwrap();
    assert_eq!(core.last_prepared(), 2);
}

// A secondary promoted by meta re-prepares its uncommitted tail under the
// new ballot and serves only once all of it committed.
#[test]
fn promotion_re_prepares_tail_before_serving() {
    let mut core = replica(S2, config(1, P, &[S2, S3]));
    for decree in 1..=2 {
        core.handle(
            Input::Peer {
                from: P,
                message: prepare(1, decree, 0, b"t"),
            },
            1,
        );
        core.handle(Input::LogDurable { ballot: 1, decree }, 1);
    }
    let out = core.handle(Input::Config(config(2, S2, &[S3])), 5);
    assert_eq!(core.role(), Role::Primary);
    core.handle(
        Input::Lease {
            ballot: 2,
            until_ms: 10_000,
        },
        5,
    );
    let appends: Vec<(Ballot, Decree)> = out
        .iter()
        .filter_map(|o| match o {
            Output::AppendLog(m) => Some((m.ballot, m.decree)),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![(2, 1), (2, 2)]);
    assert_eq!(prepares(&out).len(), 2);
    assert!(!core.is_activated());
    assert_eq!(
        write(&mut core, 9, b"w", 6),
        vec![Output::WriteReply {
            token: 9,
            result: Err(WriteError::NotActivated)
        }]
    );
    // The old ballot's durability no longer counts.
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        6,
    );
    ack(&mut core, S3, 2, 1);
    ack(&mut core, S3, 2, 2);
    assert_eq!(core.last_committed(), 0);
    let mut out = core.handle(
        Input::LogDurable {
            ballot: 2,
            decree: 1,
        },
        7,
    );
    assert!(!core.is_activated(), "decree 2 is still uncommitted");
    out.extend(core.handle(
        Input::LogDurable {
            ballot: 2,
            decree: 2,
        },
        7,
    ));
    assert_eq!(applied(&out), vec![1, 2]);
    assert!(core.is_activated());
    assert!(core.is_serving(8));
}

// Reads are allowed only at an activated primary within its lease.
#[test]
fn reads_need_primary_and_lease() {
    let mut core = replica(P, config(1, P, &[S2]));
    let read = |core: &mut ReplicaCore, now_ms| core.handle(Input::ClientRead { token: 1 }, now_ms);
    assert_eq!(
        read(&mut core, 9_999),
        vec![Output::ReadReply {
            token: 1,
            result: Ok(())
        }]
    );
    assert_eq!(
        read(&mut core, 10_000),
        vec![Output::ReadReply {
            token: 1,
            result: Err(ReadError::LeaseExpired)
        }]
    );
    assert_eq!(
        write(&mut core, 2, b"a", 10_000),
        vec![Output::WriteReply {
            token: 2,
            result: Err(WriteError::LeaseExpired)
        }]
    );
    let mut secondary = replica(S2, config(1, P, &[S2]));
    assert_eq!(
        read(&mut secondary, 1),
        vec![Output::ReadReply {
            token: 1,
            result: Err(ReadError::NotPrimary)
        }]
    );
}

// Writes beyond the prepare window are refused Busy, never queued.
#[test]
fn window_bound_refuses_busy() {
    let mut core = primary();
    let window_max = settings().prepare_window_max;
    for token in 0..window_max as Token {
        write(&mut core, token, b"x", 1);
    }
    assert_eq!(
        write(&mut core, 999, b"x", 1),
        vec![Output::WriteReply {
            token: 999,
            result: Err(WriteError::Busy { window_max })
        }]
    );
}

// After the idle time, a primary whose secondaries lag its commit point
// sends an empty write carrying it; none when nothing lags.
#[test]
fn idle_primary_pushes_commit_point_with_empty_write() {
    let mut core = primary();
    write(&mut core, 1, b"a", 100);
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        101,
    );
    ack(&mut core, S2, 1, 1);
    ack(&mut core, S3, 1, 1);
    assert_eq!(core.last_committed(), 1);
    assert!(
        core.handle(Input::Tick, 110).is_empty(),
        "not idle long enough"
    );
    let out = core.handle(Input::Tick, 120);
    let sent = prepares(&out);
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, m, committed)| m.payload.is_empty() && m.decree == 2 && *committed == 1));
    assert!(core
        .handle(Input::Tick, 200)
        .iter()
        .all(|o| !matches!(o, Output::AppendLog(_))));
    // The empty write commits; its own commit changes nothing, so an idle
    // primary sends no more Prepares (it used to push one after another).
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 2,
        },
        201,
    );
    ack(&mut core, S2, 1, 2);
    ack(&mut core, S3, 1, 2);
    assert_eq!(core.last_committed(), 2);
    for now_ms in (210..2_000).step_by(10) {
        assert!(
            prepares(&core.handle(Input::Tick, now_ms)).is_empty(),
            "an idle primary sent a Prepare at {now_ms} ms"
        );
    }
    // A real write's commit point is pushed again once idle.
    write(&mut core, 2, b"b", 2_000);
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 3,
        },
        2_001,
    );
    ack(&mut core, S2, 1, 3);
    ack(&mut core, S3, 1, 3);
    let sent = prepares(&core.handle(Input::Tick, 2_030));
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, m, committed)| m.payload.is_empty() && m.decree == 4 && *committed == 3));
}

// `PushCommit` makes an idle primary send the commit point of a decree no
// Prepare carried yet — the idle push's own, for one — in an empty write,
// once; nothing for a decree already sent or not committed.
#[test]
fn push_commit_sends_a_commit_point_no_prepare_carried() {
    let mut core = primary();
    write(&mut core, 1, b"a", 100);
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        101,
    );
    ack(&mut core, S2, 1, 1);
    ack(&mut core, S3, 1, 1);
    // The idle push carries 1; its own decree 2 commits unsent.
    assert_eq!(prepares(&core.handle(Input::Tick, 130)).len(), 2);
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 2,
        },
        131,
    );
    ack(&mut core, S2, 1, 2);
    ack(&mut core, S3, 1, 2);
    assert_eq!(core.last_committed(), 2);
    let out = core.handle(Input::PushCommit { decree: 3 }, 140);
    assert!(prepares(&out).is_empty(), "decree 3 is not committed");
    let out = core.handle(Input::PushCommit { decree: 1 }, 140);
    assert!(prepares(&out).is_empty(), "decree 1 was sent");
    let sent = prepares(&core.handle(Input::PushCommit { decree: 2 }, 140));
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, m, committed)| m.payload.is_empty() && m.decree == 3 && *committed == 2));
    let again = core.handle(Input::PushCommit { decree: 2 }, 141);
    assert!(prepares(&again).is_empty(), "pushed once");
}

// A resend to one lagging secondary does not count as telling the other
// the commit point it carries: `PushCommit` still pushes it to all.
#[test]
fn push_commit_is_not_fooled_by_a_resend_to_one_secondary() {
    let mut core = primary();
    write(&mut core, 1, b"a", 100);
    write(&mut core, 2, b"b", 100);
    for decree in [1, 2] {
        core.handle(Input::LogDurable { ballot: 1, decree }, 101);
        ack(&mut core, S2, 1, decree);
    }
    ack(&mut core, S3, 1, 1);
    assert_eq!(core.last_committed(), 1);
    // S3 lags: the resend of decree 2 carries commit point 1 to it alone.
    let resent = prepares(&core.handle(Input::Tick, 160));
    assert_eq!(
        resent
            .iter()
            .map(|(to, m, c)| (*to, m.decree, *c))
            .collect::<Vec<_>>(),
        vec![(S3, 2, 1)]
    );
    ack(&mut core, S3, 1, 2);
    assert_eq!(core.last_committed(), 2);
    // S2 never heard that decree 1 committed.
    let sent = prepares(&core.handle(Input::PushCommit { decree: 1 }, 161));
    assert_eq!(
        sent.iter().map(|(to, _, c)| (*to, *c)).collect::<Vec<_>>(),
        vec![(S2, 2), (S3, 2)]
    );
}

// An unacked Prepare is resent, and after the prepare timeout the primary
// asks meta to remove the silent secondary (rate-limited).
#[test]
fn silent_secondary_resent_then_reported() {
    let mut core = primary();
    write(&mut core, 1, b"a", 0);
    core.handle(
        Input::LogDurable {
            ballot: 1,
            decree: 1,
        },
        1,
    );
    ack(&mut core, S2, 1, 1);
    let out = core.handle(Input::Tick, 50);
    assert_eq!(
        prepares(&out).iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![S3]
    );
    let out = core.handle(Input::Tick, 400);
    assert!(out.contains(&Output::ToMeta(MetaRequest::RemoveSecondary {
        ballot: 1,
        node: S3
    })));
    let out = core.handle(Input::Tick, 450);
    assert!(!out.iter().any(|o| matches!(o, Output::ToMeta(_))));
    // Meta removes it: the primary re-prepares under the new ballot without
    // it, keeps the client waiting, and commits.
    let out = core.handle(Input::Config(config(2, P, &[S2])), 460);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::AppendLog(m) if m.ballot == 2 && m.decree == 1)));
    core.handle(
        Input::LogDurable {
            ballot: 2,
            decree: 1,
        },
        461,
    );
    let out = ack(&mut core, S2, 2, 1);
    assert!(out.contains(&Output::WriteReply {
        token: 1,
        result: Ok(1)
    }));
}

// A configuration without this node ends its service and answers waiting
// writes "unknown outcome", never a definite failure; stale configs are ignored.
#[test]
fn removal_fails_pending_writes_unknown() {
    let mut core = primary();
    write(&mut core, 4, b"a", 1);
    assert!(core
        .handle(Input::Config(config(1, S2, &[S3])), 2)
        .is_empty());
    let out = core.handle(Input::Config(config(2, S2, &[S3])), 2);
    assert_eq!(core.role(), Role::Inactive);
    assert!(out.contains(&Output::WriteReply {
        token: 4,
        result: Err(WriteError::UnknownOutcome)
    }));
    assert_eq!(
        write(&mut core, 5, b"b", 3),
        vec![Output::WriteReply {
            token: 5,
            result: Err(WriteError::NotPrimary)
        }]
    );
}

// Recovery replays the logged commit point, keeps the durable tail, and
// lets the latest record of a decree win.
#[test]
fn recover_from_log() {
    let record = |ballot, decree, committed, payload: &[u8]| Mutation {
        ballot,
        decree,
        committed_decree: committed,
        payload: payload.to_vec(),
    };
    let log = vec![
        record(1, 1, 0, b"a"),
        record(1, 2, 1, b"b"),
        record(1, 3, 1, b"old"),
        record(2, 3, 2, b"new"),
        record(2, 4, 2, b"d"),
        record(2, 6, 2, b"gap"),
    ];
    let (core, replay) = ReplicaCore::recover(Gpid::default(), S2, settings(), 0, log).unwrap();
    assert_eq!(
        replay.iter().map(|m| m.decree).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(core.last_committed(), 2);
    assert_eq!(core.last_prepared(), 4);
    assert_eq!(core.ballot(), 2);
    assert_eq!(core.role(), Role::Inactive);
    // Reinstated as sole primary, it re-prepares 3..=4 and commits alone.
    let mut core = core;
    core.handle(Input::Config(config(3, S2, &[])), 10);
    let mut out = core.handle(
        Input::LogDurable {
            ballot: 3,
            decree: 3,
        },
        11,
    );
    out.extend(core.handle(
        Input::LogDurable {
            ballot: 3,
            decree: 4,
        },
        11,
    ));
    assert_eq!(applied(&out), vec![3, 4]);
    assert!(core.is_activated());
}

// Inactive replicas answer NotMember, a second sender at the same ballot
// WrongPrimary, and a decree beyond the window WindowFull; none is logged.
#[test]
fn secondary_refusals() {
    let refusal = |out: &[Output]| match out {
        [Output::Send {
            message: PeerMessage::PrepareAck {
                result: Err(error), ..
            },
            ..
        }] => Some(*error),
        _ => None,
    };
    let mut inactive = ReplicaCore::new(Gpid::default(), S2, settings()).unwrap();
    let out = inactive.handle(
        Input::Peer {
            from: P,
            message: prepare(1, 1, 0, b"x"),
        },
        1,
    );
    assert_eq!(refusal(&out), Some(PrepareError::NotMember));
    let mut secondary = replica(S2, config(1, P, &[S2, S3]));
    let out = secondary.handle(
        Input::Peer {
            from: S3,
            message: prepare(1, 1, 0, b"x"),
        },
        1,
    );
    assert_eq!(refusal(&out), Some(PrepareError::WrongPrimary));
    let far = settings().prepare_window_max as Decree + 1;
    let out = secondary.handle(
        Input::Peer {
            from: P,
            message: prepare(1, far, 0, b"x"),
        },
        1,
    );
    assert_eq!(
        refusal(&out),
        Some(PrepareError::WindowFull { decree: far })
    );
    assert_eq!(secondary.last_prepared(), 0);
}

// Malformed configurations (primary among the secondaries, unsorted
// secondaries) are ignored, and a lease never shrinks.
#[test]
fn malformed_config_ignored_lease_monotonic() {
    let mut core = ReplicaCore::new(Gpid::default(), P, settings()).unwrap();
    assert!(core.handle(Input::Config(config(1, P, &[P])), 0).is_empty());
    assert!(core
        .handle(Input::Config(config(1, P, &[S3, S2])), 0)
        .is_empty());
    assert_eq!(core.role(), Role::Inactive);
    core.handle(Input::Config(config(1, P, &[S2, S3])), 0);
    core.handle(
        Input::Lease {
            ballot: 1,
            until_ms: 500,
        },
        0,
    );
    core.handle(
        Input::Lease {
            ballot: 1,
            until_ms: 300,
        },
        0,
    );
    assert_eq!(core.lease_until_ms(), 500);
}

// A lease names the ballot meta granted it for, and meta grants one only
// to the node its committed configuration names primary there
// (**lease-per-ballot**). A lease for another ballot — the node's lease for
// its other partitions, or one for a ballot this replica left — is
// ignored; a replica that stops being primary loses its lease, and one
// kept primary under a new ballot keeps it.
#[test]
fn lease_holds_only_for_its_ballot_and_role() {
    let mut core = ReplicaCore::new(Gpid::default(), P, settings()).unwrap();
    core.handle(Input::Config(config(3, P, &[S2])), 0);
    assert!(core.is_activated(), "nothing to re-prepare");
    let lease = |ballot, until_ms| Input::Lease { ballot, until_ms };
    core.handle(lease(2, 1_000), 0);
    assert_eq!(core.lease_until_ms(), 0, "a lease for an older ballot");
    core.handle(lease(4, 1_000), 0);
    assert_eq!(
        core.lease_until_ms(),
        0,
        "a lease for a ballot not accepted yet"
    );
    core.handle(lease(3, 1_000), 0);
    assert_eq!(core.lease_until_ms(), 1_000);
    assert!(core.is_serving(10));
    // Still primary under ballot 4 (a learner added): the lease stays.
    core.handle(Input::Config(with_learners(4, P, &[S2], &[S3])), 20);
    assert_eq!(core.lease_until_ms(), 1_000);
    // Replaced: the lease is gone at once and a renewal for the old ballot
    // (the node beaconing for its other partitions) brings nothing back.
    core.handle(Input::Config(config(5, S2, &[P])), 30);
    assert_eq!(core.lease_until_ms(), 0);
    core.handle(lease(4, 2_000), 40);
    core.handle(lease(5, 2_000), 40);
    assert_eq!(core.lease_until_ms(), 0);
    assert_eq!(
        core.handle(Input::ClientRead { token: 1 }, 50),
        vec![Output::ReadReply {
            token: 1,
            result: Err(ReadError::NotPrimary)
        }]
    );
}

// handle_into appends to the caller's buffer and leaves the core's empty.
#[test]
fn handle_into_reuses_the_buffer() {
    let mut core = primary();
    let mut buffer = Vec::with_capacity(16);
    core.handle_into(
        Input::ClientWrite {
            token: 1,
            payload: b"a".to_vec(),
        },
        1,
        &mut buffer,
    );
    assert_eq!(buffer.len(), 3, "one append and two prepares");
    buffer.clear();
    core.handle_into(Input::ClientRead { token: 2 }, 1, &mut buffer);
    assert_eq!(
        buffer,
        vec![Output::ReadReply {
            token: 2,
            result: Ok(())
        }]
    );
}

// ---- learning ----

const L4: NodeId = NodeId(4);

fn with_learners(
    ballot: Ballot,
    primary: NodeId,
    secondaries: &[NodeId],
    learners: &[NodeId],
) -> PartitionConfig {
    PartitionConfig {
        learners: learners.to_vec(),
        ..config(ballot, primary, secondaries)
    }
}

fn peer(core: &mut ReplicaCore, from: NodeId, message: PeerMessage, now_ms: u64) -> Vec<Output> {
    core.handle(Input::Peer { from, message }, now_ms)
}

fn durable(core: &mut ReplicaCore, ballot: Ballot, decree: Decree) -> Vec<Output> {
    core.handle(Input::LogDurable { ballot, decree }, 1)
}

/// A primary with secondary S2 that committed decrees 1..=n.
fn primary_with_history(n: Decree) -> ReplicaCore {
    let mut core = replica(P, config(1, P, &[S2]));
    for decree in 1..=n {
        write(&mut core, decree, &[decree as u8], 1);
        durable(&mut core, 1, decree);
        ack(&mut core, S2, 1, decree);
    }
    assert_eq!(core.last_committed(), n);
    core
}

fn learn_responses(outputs: &[Output]) -> Vec<(Decree, Vec<Decree>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                message:
                    PeerMessage::LearnResponse {
                        committed_decree,
                        mutations,
                        ..
                    },
                ..
            } => Some((
                *committed_decree,
                mutations.iter().map(|m| m.decree).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn learn_requests(outputs: &[Output]) -> Vec<(NodeId, Ballot, Decree)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                message:
                    PeerMessage::LearnRequest {
                        ballot,
                        learner_committed,
                    },
            } => Some((*to, *ballot, *learner_committed)),
            _ => None,
        })
        .collect()
}

fn learn_request(ballot: Ballot, learner_committed: Decree) -> PeerMessage {
    PeerMessage::LearnRequest {
        ballot,
        learner_committed,
    }
}

// A replica named learner asks its primary at once (and again every
// learn_retry_ms without progress); it drops its uncommitted tail.
#[test]
fn learner_asks_primary_and_retries() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    let out = core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 10);
    assert!(out.contains(&Output::RoleChanged {
        role: Role::Learner,
        ballot: 2
    }));
    assert_eq!(learn_requests(&out), vec![(P, 2, 0)]);
    assert!(learn_requests(&core.handle(Input::Tick, 100)).is_empty());
    let retry = settings().learn_retry_ms;
    assert_eq!(
        learn_requests(&core.handle(Input::Tick, 10 + retry)),
        vec![(P, 2, 0)]
    );
}

// The primary answers from its cache when it reaches back far enough and
// from then on needs the learner's acks to commit; a request that shows the
// learner holds everything up to that point makes it ask meta to promote.
#[test]
fn primary_answers_from_cache_then_needs_learner_acks() {
    let mut core = primary_with_history(3);
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 2);
    // The new ballot re-prepares nothing (no tail); the primary is active.
    assert!(core.is_activated());
    let out = peer(&mut core, L4, learn_request(2, 1), 3);
    assert_eq!(learn_responses(&out), vec![(3, vec![2, 3])]);
    assert_eq!(core.caught_up_learners(), vec![L4]);
    // Prepares go to the learner too; commit now waits for its ack.
    let out = write(&mut core, 20, b"d", 4);
    assert_eq!(
        prepares(&out).iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![S2, L4]
    );
    durable(&mut core, 2, 4);
    assert!(applied(&ack(&mut core, S2, 2, 4)).is_empty());
    assert_eq!(applied(&ack(&mut core, L4, 2, 4)), vec![4]);
    // Not yet at the point where it caught up: no promotion.
    let out = peer(&mut core, L4, learn_request(2, 2), 5);
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::ToMeta(MetaRequest::UpgradeLearner { .. }))));
    let out = peer(&mut core, L4, learn_request(2, 3), 5);
    assert_eq!(
        out,
        vec![Output::ToMeta(MetaRequest::UpgradeLearner {
            ballot: 2,
            node: L4
        })]
    );
}

// Before the learner caught up its acks are not needed (and its silence is
// not reported); once caught up, a silent learner is reported like a
// secondary.
#[test]
fn learner_acks_needed_only_once_caught_up() {
    let mut core = primary_with_history(0);
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    write(&mut core, 1, b"a", 1);
    durable(&mut core, 2, 1);
    assert_eq!(applied(&ack(&mut core, S2, 2, 1)), vec![1]);
    let timeout = settings().prepare_timeout_ms;
    let out = core.handle(Input::Tick, 1 + timeout);
    assert!(!out.iter().any(|o| matches!(o, Output::ToMeta(_))));
    peer(&mut core, L4, learn_request(2, 0), 2);
    assert_eq!(core.caught_up_learners(), vec![L4]);
    write(&mut core, 2, b"b", 3);
    durable(&mut core, 2, 2);
    ack(&mut core, S2, 2, 2);
    let out = core.handle(Input::Tick, 3 + timeout);
    assert!(out.contains(&Output::ToMeta(MetaRequest::RemoveSecondary {
        ballot: 2,
        node: L4
    })));
}

/// A sole primary at ballot 1 with decrees 1..=5 committed and a learn
/// cache of two (4 and 5).
fn sole_primary_with_small_cache() -> ReplicaCore {
    let small = ReplicationSettings {
        learn_cache_max: 2,
        ..settings()
    };
    let mut core = ReplicaCore::new(Gpid::default(), P, small).unwrap();
    core.handle(Input::Config(config(1, P, &[])), 0);
    core.handle(
        Input::Lease {
            ballot: 1,
            until_ms: 10_000,
        },
        0,
    );
    for decree in 1..=5 {
        write(&mut core, decree, b"x", 1);
        durable(&mut core, 1, decree);
    }
    core
}

// A gap the cache does not cover goes to the host (log or checkpoint), and
// the learner is not counted as caught up.
#[test]
fn gap_beyond_cache_goes_to_storage() {
    let mut core = sole_primary_with_small_cache();
    assert_eq!(core.cache_start(), Some(4));
    core.handle(Input::Config(with_learners(2, P, &[], &[L4])), 2);
    let out = peer(&mut core, L4, learn_request(2, 1), 3);
    assert_eq!(
        out,
        vec![Output::LearnFromStorage {
            to: L4,
            ballot: 2,
            learner_committed: 1
        }]
    );
    assert!(core.caught_up_learners().is_empty());
    // From decree 3 on the cache covers it.
    let out = peer(&mut core, L4, learn_request(2, 3), 3);
    assert_eq!(learn_responses(&out), vec![(5, vec![4, 5])]);
    // The host's answer from its log.
    assert!(matches!(
        core.learn_response(Vec::new()),
        PeerMessage::LearnResponse {
            ballot: 2,
            committed_decree: 5,
            ..
        }
    ));
    // Requests from non-learners or at another ballot are ignored.
    assert!(peer(&mut core, S2, learn_request(2, 0), 3).is_empty());
    assert!(peer(&mut core, L4, learn_request(1, 0), 3).is_empty());
}

// The learner applies and logs learned mutations, asks again only once they
// are durable, acks Prepares of its primary (not of a newer ballot), and
// keeps what is above the learned point.
#[test]
fn learner_applies_learned_and_acks_prepares() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    // A Prepare at decree 4 arrives first: logged and acked once durable.
    let out = peer(&mut core, P, prepare(2, 4, 3, b"d"), 1);
    assert!(matches!(&out[..], [Output::AppendLog(m)] if m.decree == 4));
    let out = durable(&mut core, 2, 4);
    assert_eq!(
        out,
        vec![Output::Send {
            to: P,
            message: PeerMessage::PrepareAck {
                ballot: 2,
                decree: 4,
                result: Ok(())
            }
        }]
    );
    let mutations: Vec<Mutation> = (1..=3)
        .map(|decree| Mutation {
            ballot: 1,
            decree,
            committed_decree: decree - 1,
            payload: vec![decree as u8],
        })
        .collect();
    let out = peer(
        &mut core,
        P,
        PeerMessage::LearnResponse {
            ballot: 2,
            committed_decree: 3,
            mutations,
        },
        2,
    );
    assert_eq!(applied(&out), vec![1, 2, 3]);
    let logged: Vec<(Decree, Decree)> = out
        .iter()
        .filter_map(|o| match o {
            Output::AppendLog(m) => Some((m.decree, m.committed_decree)),
            _ => None,
        })
        .collect();
    assert_eq!(
        logged,
        vec![(1, 1), (2, 2), (3, 3)],
        "logged as committed, each up to itself (learned-claims-itself)"
    );
    assert!(learn_requests(&out).is_empty(), "not durable yet");
    assert_eq!(core.last_committed(), 3);
    assert_eq!(core.last_prepared(), 4, "the acked Prepare is kept");
    durable(&mut core, 1, 2);
    let out = durable(&mut core, 1, 3);
    assert_eq!(learn_requests(&out), vec![(P, 2, 3)]);
    // A Prepare from a newer ballot is refused: only meta promotes.
    let out = peer(&mut core, S2, prepare(3, 5, 4, b"e"), 3);
    assert!(matches!(
        &out[..],
        [Output::Send {
            message: PeerMessage::PrepareAck {
                result: Err(PrepareError::NotMember),
                ..
            },
            ..
        }]
    ));
    // The primary's commit point applies the held Prepare.
    let out = peer(&mut core, P, prepare(2, 5, 4, b"e"), 4);
    assert_eq!(applied(&out), vec![4]);
}

// An installed checkpoint moves the commit point, drops the window below it
// and makes the learner ask for what follows; stale ones are ignored.
#[test]
fn checkpoint_installed_moves_commit_point() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    peer(&mut core, P, prepare(2, 3, 0, b"c"), 1);
    peer(&mut core, P, prepare(2, 7, 0, b"g"), 1);
    durable(&mut core, 2, 3);
    durable(&mut core, 2, 7);
    assert!(!core.accepts_checkpoint(1, 5));
    assert!(core.accepts_checkpoint(2, 5));
    let out = core.handle(
        Input::CheckpointInstalled {
            ballot: 2,
            decree: 5,
        },
        2,
    );
    assert_eq!(core.last_committed(), 5);
    assert_eq!(learn_requests(&out), vec![(P, 2, 5)]);
    assert!(!core.accepts_checkpoint(2, 5));
    assert!(core
        .handle(
            Input::CheckpointInstalled {
                ballot: 2,
                decree: 4
            },
            3
        )
        .is_empty());
    // Decree 6 arrives: 6 and the held 7 commit with the primary's point.
    let out = peer(&mut core, P, prepare(2, 6, 7, b"f"), 3);
    assert!(applied(&out).is_empty(), "6 not durable yet");
    assert_eq!(applied(&durable(&mut core, 2, 6)), vec![6, 7]);
}

// Promotion: the learner becomes a secondary by a configuration, keeping
// what it acked; the primary re-prepares its tail to it.
#[test]
fn promoted_learner_keeps_acked_tail() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    peer(&mut core, P, prepare(2, 1, 0, b"a"), 1);
    durable(&mut core, 2, 1);
    let out = core.handle(Input::Config(config(3, P, &[S2, L4])), 2);
    assert!(out.contains(&Output::RoleChanged {
        role: Role::Secondary,
        ballot: 3
    }));
    assert_eq!(core.last_prepared(), 1);
    // The re-prepare under ballot 3 commits it.
    let out = peer(&mut core, P, prepare(3, 2, 1, b"b"), 3);
    assert_eq!(applied(&out), vec![1]);
}

// A primary sends Prepares to a learner only once it asked at this ballot
// (so the learner knows from meta it is one: a replica that adopted the
// ballot from a Prepare would take itself for a secondary), then at once
// the whole window.
#[test]
fn learner_gets_prepares_only_after_asking() {
    let mut core = primary_with_history(0);
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    let out = write(&mut core, 1, b"a", 1);
    assert_eq!(
        prepares(&out).iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![S2]
    );
    let out = peer(&mut core, L4, learn_request(2, 0), 2);
    let sent: Vec<(NodeId, Decree)> = prepares(&out)
        .iter()
        .map(|(to, m, _)| (*to, m.decree))
        .collect();
    assert_eq!(sent, vec![(L4, 1)]);
    let out = write(&mut core, 2, b"b", 3);
    assert_eq!(
        prepares(&out).iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![S2, L4]
    );
}

// A primary still re-preparing its tail (not activated) never asks to
// promote a learner: the tail may hold decrees committed under an earlier
// ballot that the learner does not hold yet. Once the tail committed (with
// the caught-up learner's ack) it does.
#[test]
fn no_upgrade_before_activation() {
    let log = vec![Mutation {
        ballot: 1,
        decree: 1,
        committed_decree: 0,
        payload: b"a".to_vec(),
    }];
    let (mut core, replay) = ReplicaCore::recover(Gpid::default(), P, settings(), 0, log).unwrap();
    assert!(replay.is_empty());
    core.handle(Input::Config(with_learners(2, P, &[], &[L4])), 1);
    core.handle(
        Input::Lease {
            ballot: 2,
            until_ms: 10_000,
        },
        1,
    );
    assert!(!core.is_activated());
    let out = peer(&mut core, L4, learn_request(2, 0), 2);
    assert_eq!(learn_responses(&out), vec![(0, vec![])]);
    assert_eq!(core.caught_up_learners(), vec![L4]);
    assert!(peer(&mut core, L4, learn_request(2, 0), 3).is_empty());
    durable(&mut core, 2, 1);
    assert!(!core.is_activated(), "the tail needs the learner's ack");
    assert_eq!(applied(&ack(&mut core, L4, 2, 1)), vec![1]);
    assert!(core.is_activated());
    let out = peer(&mut core, L4, learn_request(2, 0), 4);
    assert_eq!(
        out,
        vec![Output::ToMeta(MetaRequest::UpgradeLearner {
            ballot: 2,
            node: L4
        })]
    );
}

// A learner claims a commit point only once what it learned is durable,
// also across a configuration change that keeps it a learner.
#[test]
fn learner_waits_for_durable_learned_mutations_across_configs() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    let learned = Mutation {
        ballot: 1,
        decree: 1,
        committed_decree: 0,
        payload: b"a".to_vec(),
    };
    let response = PeerMessage::LearnResponse {
        ballot: 2,
        committed_decree: 1,
        mutations: vec![learned],
    };
    assert_eq!(applied(&peer(&mut core, P, response, 1)), vec![1]);
    let out = core.handle(Input::Config(with_learners(3, S2, &[P], &[L4])), 2);
    assert!(
        learn_requests(&out).is_empty(),
        "decree 1 is not durable yet"
    );
    let retry = settings().learn_retry_ms;
    assert!(learn_requests(&core.handle(Input::Tick, 2 + retry)).is_empty());
    assert_eq!(learn_requests(&durable(&mut core, 1, 1)), vec![(S2, 3, 1)]);
}

fn record(ballot: Ballot, decree: Decree, committed: Decree, payload: &[u8]) -> Mutation {
    Mutation {
        ballot,
        decree,
        committed_decree: committed,
        payload: payload.to_vec(),
    }
}

fn appended(outputs: &[Output]) -> Vec<Mutation> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::AppendLog(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

// A learner logs each learned mutation claiming commitment up to its own
// decree only (**learned-claims-itself**). Its log still holds decrees 3..=5
// from ballot 1, never committed; it learns 1..=2 from a response cut short
// (the primary's commit point is 10). Recovery from that log must replay
// 1..=2 and keep 3..=5 as an uncommitted tail, not replay them as
// committed because a learned record claimed commit point 10.
#[test]
fn learned_records_claim_no_commit_point_beyond_themselves() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(3, P, &[S2], &[L4])), 0);
    let response = PeerMessage::LearnResponse {
        ballot: 3,
        committed_decree: 10,
        mutations: vec![record(2, 1, 0, b"n1"), record(2, 2, 1, b"n2")],
    };
    let out = peer(&mut core, P, response, 1);
    assert_eq!(applied(&out), vec![1, 2]);
    let learned = appended(&out);
    assert!(learned.iter().all(|m| m.committed_decree <= m.decree));
    let mut log = vec![
        record(1, 3, 0, b"stale3"),
        record(1, 4, 0, b"stale4"),
        record(1, 5, 0, b"stale5"),
    ];
    log.extend(learned);
    let (core, replay) = ReplicaCore::recover(Gpid::default(), L4, settings(), 0, log).unwrap();
    assert_eq!(
        replay.iter().map(|m| m.decree).collect::<Vec<_>>(),
        vec![1, 2],
        "stale records of ballot 1 replayed as committed"
    );
    assert_eq!(core.last_committed(), 2);
}

// Recovery runs the void rule over every record, those at or below the
// applied decree too, and cuts at the applied decree only afterwards
// (**void-before-cut**). Ballot 2 replaced decree 5 with a different
// mutation, which was applied and flushed; ballot 1's decree 6, built on
// the replaced 5, must not come back as a tail to be re-prepared. A
// re-prepare of the same mutation keeps what follows it
// (**re-prepare-keeps-tail**).
#[test]
fn recovery_voids_above_a_replaced_applied_decree() {
    let replaced = vec![
        record(1, 4, 3, b"d"),
        record(1, 5, 4, b"a"),
        record(1, 6, 4, b"b"),
        record(2, 5, 4, b"x"),
    ];
    let (core, replay) =
        ReplicaCore::recover(Gpid::default(), S2, settings(), 5, replaced).unwrap();
    assert!(replay.is_empty());
    assert_eq!(core.last_committed(), 5);
    assert_eq!(core.last_prepared(), 5, "ballot 1's decree 6 is void");
    let re_prepared = vec![
        record(1, 4, 3, b"d"),
        record(1, 5, 4, b"a"),
        record(1, 6, 4, b"b"),
        record(2, 5, 4, b"a"),
    ];
    let (core, _) = ReplicaCore::recover(Gpid::default(), S2, settings(), 5, re_prepared).unwrap();
    assert_eq!(core.last_prepared(), 6, "the re-prepared 5 keeps 6");
    // Streaming the same records one at a time gives the same core.
    let mut recovery = Recovery::new(5);
    for m in [
        record(1, 5, 4, b"a"),
        record(1, 6, 4, b"b"),
        record(2, 5, 4, b"x"),
    ] {
        recovery.push(m.ballot, m.decree, m.committed_decree, &m.payload);
    }
    let (core, _) = recovery.finish(Gpid::default(), S2, settings()).unwrap();
    assert_eq!(core.last_prepared(), 5);
}

// A learner whose host cleared storage for a copy (chunk 0) is told so at
// once (**copy-known-to-core**): its commit point drops to 0 and it applies
// nothing — neither a learn response nor Prepares — until the copy is
// installed. A copy that will not complete leaves it at 0, asking from 0;
// a configuration change during a copy ends it too.
#[test]
fn a_copy_in_progress_is_known_to_the_core() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    let response = |mutations| PeerMessage::LearnResponse {
        ballot: 2,
        committed_decree: 3,
        mutations,
    };
    peer(&mut core, P, response(vec![record(1, 1, 0, b"a")]), 1);
    durable(&mut core, 1, 1);
    assert_eq!(core.last_committed(), 1);
    assert!(
        !core.accepts_checkpoint(2, 1),
        "not ahead of its commit point"
    );
    assert!(core.accepts_checkpoint(2, 40));
    assert!(core
        .handle(
            Input::CopyStarted {
                ballot: 2,
                decree: 40
            },
            2
        )
        .is_empty());
    assert_eq!(core.copying(), Some(40));
    assert_eq!(core.last_committed(), 0);
    // Nothing is applied on top of a half-installed copy.
    let out = peer(&mut core, P, response(vec![record(1, 1, 0, b"a")]), 3);
    assert!(applied(&out).is_empty() && appended(&out).is_empty());
    let out = peer(&mut core, P, prepare(2, 1, 1, b"p"), 3);
    assert!(applied(&out).is_empty());
    assert!(applied(&durable(&mut core, 2, 1)).is_empty());
    // The copy fails: still at 0, it asks from 0.
    let out = core.handle(Input::CopyAborted { ballot: 2 }, 4);
    assert_eq!(core.copying(), None);
    assert_eq!(learn_requests(&out), vec![(P, 2, 0)]);
    // A later copy completes.
    core.handle(
        Input::CopyStarted {
            ballot: 2,
            decree: 50,
        },
        5,
    );
    let out = core.handle(
        Input::CheckpointInstalled {
            ballot: 2,
            decree: 50,
        },
        6,
    );
    assert_eq!(core.last_committed(), 50);
    assert_eq!(core.copying(), None);
    assert_eq!(learn_requests(&out), vec![(P, 2, 50)]);
    // A new ballot during a copy ends it (the host drops the copy).
    core.handle(
        Input::CopyStarted {
            ballot: 2,
            decree: 60,
        },
        7,
    );
    core.handle(Input::Config(with_learners(3, P, &[S2], &[L4])), 8);
    assert_eq!(core.copying(), None);
    assert_eq!(core.last_committed(), 0);
    assert!(!core.accepts_checkpoint(2, 60));
}

// A primary knows where its run as primary began: its first ballot of the
// run and its commit point then. Every decree above it is in its own log
// under that ballot or a later one (the re-prepared tail, then its own
// proposals), which lets its host answer a learner above that point from
// those records alone. Kept while it stays primary across configurations;
// gone when it stops.
#[test]
fn primary_since_marks_where_its_run_began() {
    let mut core = replica(S2, config(1, P, &[S2, S3]));
    for decree in 1..=2 {
        peer(&mut core, P, prepare(1, decree, decree - 1, b"t"), 1);
        durable(&mut core, 1, decree);
    }
    assert_eq!(core.last_committed(), 1);
    assert_eq!(core.primary_since(), None);
    let out = core.handle(Input::Config(config(2, S2, &[S3])), 5);
    assert_eq!(core.primary_since(), Some((2, 1)));
    assert_eq!(
        appended(&out)
            .iter()
            .map(|m| (m.ballot, m.decree))
            .collect::<Vec<_>>(),
        vec![(2, 2)],
        "the tail above it is logged again under the run's ballot"
    );
    core.handle(Input::Config(with_learners(3, S2, &[S3], &[P])), 6);
    assert_eq!(core.primary_since(), Some((2, 1)), "still the same run");
    core.handle(Input::Config(config(4, S3, &[S2])), 7);
    assert_eq!(core.primary_since(), None);
}

// A learner that acked a Prepare keeps it through a copy (**acked-stays-held**):
// the primary counted the ack toward commit and will promote the learner
// on the strength of it, so the learner must still hold the mutation when
// the copy is installed, and after a copy that aborts. (Found by the
// simulator running the production host: a learner acked decree 41 while
// still learning, a copy at decree 40 then cleared its window, the primary
// committed 41 on its ack and had it promoted without 41.)
#[test]
fn a_learner_keeps_what_it_acked_through_a_copy() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    // It joins the stream above what it is still learning: acks 41.
    peer(&mut core, P, prepare(2, 41, 39, b"p41"), 1);
    let out = durable(&mut core, 2, 41);
    assert!(matches!(
        &out[..],
        [Output::Send {
            message: PeerMessage::PrepareAck {
                decree: 41,
                result: Ok(()),
                ..
            },
            ..
        }]
    ));
    let started = Input::CopyStarted {
        ballot: 2,
        decree: 40,
    };
    core.handle(started.clone(), 2);
    // The copy aborts: storage is empty, the acked Prepare stays.
    core.handle(Input::CopyAborted { ballot: 2 }, 3);
    assert_eq!(core.last_committed(), 0);
    // A new copy installs at 40; the primary's commit point applies 41.
    core.handle(started, 4);
    core.handle(
        Input::CheckpointInstalled {
            ballot: 2,
            decree: 40,
        },
        5,
    );
    assert_eq!(core.last_committed(), 40);
    assert_eq!(core.last_prepared(), 41, "the acked Prepare is held");
    let out = peer(&mut core, P, prepare(2, 42, 41, b"p42"), 6);
    assert_eq!(applied(&out), vec![41]);
}

fn to_meta(outputs: &[Output]) -> Vec<MetaRequest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToMeta(request) => Some(request.clone()),
            _ => None,
        })
        .collect()
}

// A primary asked to hand off refuses new writes (NotPrimary: nothing
// written), lets the one in flight commit, and only then asks meta to
// switch to the secondary; a handoff to a non-secondary or at another
// ballot is ignored, and one withdrawn lets writes in again.
#[test]
fn a_handoff_drains_writes_then_asks_for_the_switch() {
    let mut core = primary();
    write(&mut core, 10, b"a", 1);
    for (ignored, decree) in [
        Input::Handoff {
            ballot: 2,
            to: Some(S2),
        },
        Input::Handoff {
            ballot: 1,
            to: Some(NodeId(9)),
        },
    ]
    .into_iter()
    .zip([2, 3])
    {
        core.handle(ignored, 1);
        assert!(write(&mut core, 11 + decree, b"b", 1)
            .iter()
            .any(|o| matches!(o, Output::AppendLog(m) if m.decree == decree)));
    }
    let out = core.handle(
        Input::Handoff {
            ballot: 1,
            to: Some(S2),
        },
        2,
    );
    assert!(to_meta(&out).is_empty(), "writes are in flight");
    let refused = write(&mut core, 12, b"c", 2);
    assert_eq!(
        refused,
        vec![Output::WriteReply {
            token: 12,
            result: Err(WriteError::NotPrimary)
        }]
    );
    for decree in [1, 2, 3] {
        core.handle(Input::LogDurable { ballot: 1, decree }, 3);
        ack(&mut core, S2, 1, decree);
        ack(&mut core, S3, 1, decree);
    }
    assert_eq!(core.last_committed(), 3, "the writes in flight committed");
    let out = core.handle(Input::Tick, 4);
    assert_eq!(
        to_meta(&out),
        vec![MetaRequest::SwitchPrimary {
            ballot: 1,
            node: S2
        }]
    );
    // Not again before the retry interval.
    assert!(to_meta(&core.handle(Input::Tick, 5)).is_empty());
    core.handle(
        Input::Handoff {
            ballot: 1,
            to: None,
        },
        6,
    );
    assert!(write(&mut core, 13, b"d", 6)
        .iter()
        .any(|o| matches!(o, Output::AppendLog(m) if m.decree == 4)));
}

// The secondary a switch makes primary, with nothing to re-prepare, sends
// an empty write first and serves only once every secondary — the old
// primary among them — acked it at the new ballot
// (**switch-serves-after-old-primary-steps-down**).
#[test]
fn a_switched_primary_serves_after_the_old_one_acks() {
    let mut core = replica(S2, config(1, P, &[S2, S3]));
    let out = core.handle(Input::Config(config(2, S2, &[P, S3])), 10);
    let sent = prepares(&out);
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, mutation, _)| mutation.payload.is_empty() && mutation.ballot == 2));
    core.handle(
        Input::Lease {
            ballot: 2,
            until_ms: 10_000,
        },
        10,
    );
    assert_eq!(core.serving_check(11), Err(ReadError::NotActivated));
    let decree = sent[0].1.decree;
    core.handle(Input::LogDurable { ballot: 2, decree }, 11);
    ack(&mut core, S3, 2, decree);
    assert_eq!(core.serving_check(12), Err(ReadError::NotActivated));
    ack(&mut core, P, 2, decree);
    assert_eq!(core.serving_check(12), Ok(()));
}

// A learner installing a copy (its commit point at 0, Prepares acked far
// above it) that a new configuration removes — the balancer gave its move
// up, or meta took it for dead under load — becomes inactive without
// holding a window it could never hold as a member: an inactive replica
// serves and commits nothing, and comes back only as a learner, which
// starts its window over.
#[test]
fn a_learner_removed_while_it_copies_drops_its_window() {
    let mut core = ReplicaCore::new(Gpid::default(), L4, settings()).unwrap();
    core.handle(Input::Config(with_learners(2, P, &[S2], &[L4])), 0);
    peer(&mut core, P, prepare(2, 141, 139, b"p141"), 1);
    durable(&mut core, 2, 141);
    core.handle(
        Input::CopyStarted {
            ballot: 2,
            decree: 140,
        },
        2,
    );
    assert_eq!(core.last_committed(), 0);
    core.handle(Input::Config(config(3, P, &[S2])), 3);
    assert_eq!(core.role(), Role::Inactive);
    assert_eq!(core.last_prepared(), core.last_committed());
    // Back as a learner, it asks from its commit point.
    let out = core.handle(Input::Config(with_learners(4, P, &[S2], &[L4])), 4);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Send {
            message: PeerMessage::LearnRequest {
                learner_committed: 0,
                ..
            },
            ..
        }
    )));
}

// A learner the primary has asked meta to promote holds everything up to
// where it caught up; a late LearnRequest from before (a lower commit
// point) must start no copy, which would empty the learner's storage while
// meta makes it a secondary (**no-copy-after-confirm**). And a learner
// sent to storage (log or copy) is no longer counted as caught up, so no
// confirmation sent before the copy wiped it can promote it. (A node under
// a rebalance panicked on the window bound of a secondary so promoted, its
// storage emptied by a copy.)
#[test]
fn no_copy_after_a_learner_confirmed() {
    let mut core = sole_primary_with_small_cache();
    core.handle(Input::Config(with_learners(2, P, &[], &[L4])), 2);
    // Marked from memory at 5, then confirmed: the primary asks meta.
    let out = peer(&mut core, L4, learn_request(2, 3), 3);
    assert_eq!(learn_responses(&out), vec![(5, vec![4, 5])]);
    let out = peer(&mut core, L4, learn_request(2, 5), 4);
    assert_eq!(
        to_meta(&out),
        vec![MetaRequest::UpgradeLearner {
            ballot: 2,
            node: L4
        }]
    );
    // A late request from before: nothing, above all no storage path.
    let out = peer(&mut core, L4, learn_request(2, 1), 5);
    assert!(out.is_empty(), "{out:?}");

    // Another learner, marked but not confirmed, whose lost response makes
    // it ask from below the cache: it goes to storage and is unmarked, so
    // its confirmation sent before does not promote it.
    core.handle(Input::Config(with_learners(3, P, &[], &[L4])), 6);
    let out = peer(&mut core, L4, learn_request(3, 3), 7);
    assert_eq!(learn_responses(&out).len(), 1);
    assert_eq!(core.caught_up_learners(), vec![L4]);
    let out = peer(&mut core, L4, learn_request(3, 1), 8);
    assert!(matches!(&out[..], [Output::LearnFromStorage { .. }]));
    assert!(core.caught_up_learners().is_empty());
    let out = peer(&mut core, L4, learn_request(3, 5), 9);
    assert!(to_meta(&out).is_empty(), "{out:?}");
}
