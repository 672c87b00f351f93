//! Meta high availability without its IO: which meta of a group serves,
//! and the state machine of the term it serves (docs/meta.md, "High
//! availability").
//!
//! A group of metas shares one store (etcd). Each meta holds a session
//! there (a lease it keeps alive) and campaigns for one leader key; the
//! leader key's creation revision is the term's **epoch**. The server feeds
//! what its campaign learns to [`LeaderGate::set_leadership`]; the
//! simulator feeds the same from its model of etcd. Every input then goes
//! through the gate:
//!
//! - A meta that is not serving answers `NOT_LEADER` with the leader's
//!   address (empty when unknown) and changes nothing.
//! - A leader serves only until its session's local end
//!   ([`session_until_ms`]), read on meta's monotonic clock at every input
//!   (**leader-stops-before-session-ends**): its session ends in etcd no
//!   sooner, and no other meta can win the leader key before that, so two
//!   metas never serve at once, even when the leader was paused and its
//!   campaign task has not yet noticed.
//! - A term starts by loading the store into a new [`MetaState`]; every
//!   save of the term compares the epoch, so a deposed leader's write fails
//!   with `Fenced` and changes nothing (**deposed-leader-fenced**). A fenced
//!   save ends the term.
//! - A new term's state machine counts every member it has not heard from
//!   as alive for one grace from its first input, and `grace_ms >
//!   lease_ms + beacon_interval_ms` (checked at load): so it removes or
//!   replaces no member before every lease the previous leader granted has
//!   ended (**leader-waits-out-leases**). Meanwhile it acks beacons and
//!   grants leases itself, so primaries keep serving.

use markab_wire::message::{ErrorCode, OpError, Request, Response, ResponseBody};

use crate::meta::state::{MetaSettings, MetaState, MetaTime};
use crate::meta::step;
use crate::meta::store::{MetaStore, MetaStoreError};

/// What one meta knows of its group's leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// The only meta of its cluster (the file store): always the leader,
    /// of epoch 0.
    Sole,
    /// The leader of term `epoch`, while its session lasts: until
    /// `until_ms` on meta's monotonic clock.
    Leader { epoch: i64, until_ms: u64 },
    /// Not the leader; the leader's address when known.
    Follower { leader: Option<String> },
}

impl Leadership {
    /// The epoch this meta serves at `now_ms`, or `None` when it must not
    /// serve (**leader-stops-before-session-ends**).
    pub fn serving(&self, now_ms: u64) -> Option<i64> {
        match self {
            Leadership::Sole => Some(0),
            Leadership::Leader { epoch, until_ms } if now_ms < *until_ms => Some(*epoch),
            Leadership::Leader { .. } | Leadership::Follower { .. } => None,
        }
    }
}

/// The local end of a session whose keepalive was sent at `sent_ms` and
/// answered with `ttl_ms` to live: `sent_ms + ttl_ms` less a tenth of the
/// TTL for the drift between meta's clock and etcd's. etcd counts the TTL
/// from when it received the keepalive, which is no earlier than
/// `sent_ms`, so the session ends in etcd no sooner than here.
pub fn session_until_ms(sent_ms: u64, ttl_ms: u64) -> u64 {
    sent_ms + ttl_ms - ttl_ms / 10
}

/// One meta's serving side: its leadership and, while it serves, the state
/// machine of its term.
#[derive(Debug)]
pub struct LeaderGate {
    settings: MetaSettings,
    leadership: Leadership,
    /// Every meta of the group, by address (this one included).
    members: Vec<String>,
    term: Option<Term>,
    /// Terms this meta started so far (its state machine loaded).
    terms_started: u64,
}

#[derive(Debug)]
struct Term {
    epoch: i64,
    state: MetaState,
}

impl LeaderGate {
    /// A gate for meta `settings.meta_address` with `leadership`.
    pub fn new(settings: MetaSettings, leadership: Leadership) -> LeaderGate {
        let members = vec![settings.meta_address.clone()];
        LeaderGate {
            settings,
            leadership,
            members,
            term: None,
            terms_started: 0,
        }
    }

    /// A sole meta's gate whose first term starts from `state` (already
    /// loaded from its store).
    pub fn sole(state: MetaState) -> LeaderGate {
        let mut gate = LeaderGate::new(state.settings().clone(), Leadership::Sole);
        gate.term = Some(Term { epoch: 0, state });
        gate.terms_started = 1;
        gate
    }

    /// What the campaign learned: the leadership now and the group's
    /// members. A term whose epoch this meta no longer leads ends.
    pub fn set_leadership(&mut self, leadership: Leadership, members: Vec<String>) {
        let keeps = match (&leadership, &self.term) {
            (Leadership::Sole, Some(term)) => term.epoch == 0,
            (Leadership::Leader { epoch, .. }, Some(term)) => term.epoch == *epoch,
            _ => false,
        };
        if !keeps && self.term.take().is_some() {
            tracing::warn!(leadership = ?leadership, "meta's term ended");
        }
        self.leadership = leadership;
        if !members.is_empty() {
            self.members = members;
        }
    }

    /// The settings every term's state machine starts with.
    pub fn settings(&self) -> &MetaSettings {
        &self.settings
    }

    /// The leadership as last set.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The group's members as last set.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Terms started so far.
    pub fn terms_started(&self) -> u64 {
        self.terms_started
    }

    /// The state machine of the current term, if one runs (whether or not
    /// it may serve now).
    pub fn state(&self) -> Option<&MetaState> {
        self.term.as_ref().map(|term| &term.state)
    }

    /// The current term's epoch, if one runs.
    pub fn epoch(&self) -> Option<i64> {
        self.term.as_ref().map(|term| term.epoch)
    }

    /// The answer of a meta that does not serve at `now_ms`.
    pub fn not_leader(&self, now_ms: u64) -> OpError {
        let leader = match &self.leadership {
            Leadership::Follower {
                leader: Some(leader),
            } => leader.clone(),
            // A leader past its session's end knows no other leader yet.
            _ => String::new(),
        };
        debug_assert!(self.leadership.serving(now_ms).is_none());
        OpError::new(ErrorCode::NotLeader, leader)
    }

    /// The state machine that serves at `now`: the current term's, or a new
    /// term's loaded from `store` when this meta leads an epoch it has no
    /// state for. `NOT_LEADER` when it does not serve; `STORAGE_ERROR` when
    /// the store cannot be read (the next input tries again).
    pub fn serving_state(
        &mut self,
        store: &mut dyn MetaStore,
        now: MetaTime,
    ) -> Result<&mut MetaState, OpError> {
        if self.leadership.serving(now.monotonic_ms).is_none() {
            self.term = None;
            return Err(self.not_leader(now.monotonic_ms));
        }
        match self.serving_term(store, now) {
            Ok(state) => Ok(state.expect("serving was checked above")),
            Err(error) => Err(step::store_error(&error)),
        }
    }

    /// [`LeaderGate::serving_state`] with the store's own error: `None`
    /// when this meta does not serve at `now`.
    fn serving_term(
        &mut self,
        store: &mut dyn MetaStore,
        now: MetaTime,
    ) -> Result<Option<&mut MetaState>, MetaStoreError> {
        let Some(epoch) = self.leadership.serving(now.monotonic_ms) else {
            self.term = None;
            return Ok(None);
        };
        if self.term.as_ref().is_some_and(|term| term.epoch != epoch) {
            self.term = None;
        }
        if self.term.is_none() {
            let data = store.begin_term(epoch)?.unwrap_or_default();
            tracing::info!(
                epoch,
                tables = data.tables.len(),
                version = data.version,
                "meta's term started: state loaded from the store"
            );
            self.terms_started += 1;
            self.term = Some(Term {
                epoch,
                state: MetaState::new(self.settings.clone(), data),
            });
        }
        Ok(self.term.as_mut().map(|term| &mut term.state))
    }

    /// Runs one request through the serving state machine and the store
    /// ([`step::execute`]), or answers `NOT_LEADER`. `cluster_info` gains
    /// the group's view: this meta's role, the leader, the epoch, the
    /// members.
    pub fn request(
        &mut self,
        store: &mut dyn MetaStore,
        request: &Request,
        now: MetaTime,
    ) -> Response {
        let state = self.serving_state(store, now)?;
        let response = step::execute(state, store, request, now);
        self.after(&response);
        match (request, response) {
            (Request::ClusterInfo, Ok(ResponseBody::Pairs(mut pairs))) => {
                pairs.extend(self.group_pairs(now.monotonic_ms));
                Ok(ResponseBody::Pairs(pairs))
            }
            (_, response) => response,
        }
    }

    /// Runs a tick through the serving state machine, if this meta serves
    /// ([`step::execute_tick`]); a fenced save ends the term.
    pub fn tick(&mut self, store: &mut dyn MetaStore, now: MetaTime) -> Result<(), MetaStoreError> {
        let Some(state) = self.serving_term(store, now)? else {
            return Ok(());
        };
        let result = step::execute_tick(state, store, now);
        if let Err(MetaStoreError::Fenced { .. }) = &result {
            self.end_term("a tick's save was fenced");
        }
        result
    }

    /// Ends the term when `response` says the store fenced a save
    /// (**deposed-leader-fenced**). Call after every step run on
    /// [`LeaderGate::serving_state`]'s machine.
    pub fn after(&mut self, response: &Response) {
        if matches!(response, Err(error) if error.code == ErrorCode::NotLeader) {
            self.end_term("a save was fenced");
        }
    }

    /// Ends the current term: this meta was deposed (or must reload).
    pub fn end_term(&mut self, why: &str) {
        if let Some(term) = self.term.take() {
            tracing::warn!(epoch = term.epoch, why, "meta's term ended");
        }
        if let Leadership::Leader { .. } = self.leadership {
            self.leadership = Leadership::Follower { leader: None };
        }
    }

    /// `cluster_info`'s pairs about the group.
    pub fn group_pairs(&self, now_ms: u64) -> Vec<(String, String)> {
        let (role, leader) = match &self.leadership {
            _ if self.leadership.serving(now_ms).is_some() => {
                ("leader", self.settings.meta_address.clone())
            }
            Leadership::Follower { leader } => ("follower", leader.clone().unwrap_or_default()),
            _ => ("follower", String::new()),
        };
        vec![
            ("meta_role".to_owned(), role.to_owned()),
            ("meta_leader".to_owned(), leader),
            (
                "meta_epoch".to_owned(),
                self.epoch()
                    .map(|epoch| epoch.to_string())
                    .unwrap_or_default(),
            ),
            ("metas".to_owned(), self.members.join(",")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::store::MemoryMetaStore;
    use markab_wire::message::CreateTableRequest;

    fn settings() -> MetaSettings {
        MetaSettings {
            meta_address: "m1:1".into(),
            data_dir: String::new(),
            hold_seconds: 60,
            node_timeout_ms: 5_000,
            replica_count_default: 1,
            replica_count_max: 3,
            replication: None,
            cluster_id: 1,
        }
    }

    fn create(name: &str) -> Request {
        Request::CreateTable(CreateTableRequest {
            table: name.into(),
            partition_count: 1,
            replica_count: 1,
            envs: Vec::new(),
            success_if_exist: false,
        })
    }

    fn beacon() -> Request {
        Request::Beacon(markab_wire::message::NodeBeacon {
            node: "n1:1".into(),
            shard_addresses: vec!["n1:1".into()],
            replicas: Vec::new(),
            incarnation: 1,
            backups: Vec::new(),
            splits: Vec::new(),
            dups: Vec::new(),
        })
    }

    fn at(ms: u64) -> MetaTime {
        MetaTime {
            monotonic_ms: ms,
            unix_ms: 1_700_000_000_000 + ms,
        }
    }

    // A follower answers NOT_LEADER naming the leader and changes nothing;
    // a leader past its session's end answers NOT_LEADER too, even before
    // its campaign noticed.
    #[test]
    fn only_a_leader_within_its_session_serves() {
        let mut store = MemoryMetaStore::default();
        let mut gate = LeaderGate::new(
            settings(),
            Leadership::Follower {
                leader: Some("m2:1".into()),
            },
        );
        let error = gate
            .request(
                &mut store,
                &Request::ListTables {
                    include_dropped: false,
                },
                at(0),
            )
            .unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (ErrorCode::NotLeader, "m2:1")
        );
        gate.set_leadership(
            Leadership::Leader {
                epoch: 7,
                until_ms: 1_000,
            },
            Vec::new(),
        );
        assert!(gate
            .request(
                &mut store,
                &Request::ListTables {
                    include_dropped: false
                },
                at(999)
            )
            .is_ok());
        let late = gate
            .request(
                &mut store,
                &Request::ListTables {
                    include_dropped: false,
                },
                at(1_000),
            )
            .unwrap_err();
        assert_eq!(
            (late.code, late.message.as_str()),
            (ErrorCode::NotLeader, "")
        );
        assert!(gate.state().is_none(), "the term ended with the session");
    }

    // A new epoch starts a new term from what the store holds, so a leader
    // that lost and won again forgets what it held in between.
    #[test]
    fn each_epoch_loads_the_store() {
        let mut store = MemoryMetaStore::default();
        let mut gate = LeaderGate::new(
            settings(),
            Leadership::Leader {
                epoch: 3,
                until_ms: u64::MAX,
            },
        );
        gate.request(&mut store, &beacon(), at(1)).unwrap();
        gate.request(&mut store, &create("a"), at(1)).unwrap();
        assert_eq!(gate.terms_started(), 1);
        // Another leader's term changed the store meanwhile.
        let mut other = MetaState::new(settings(), store.saved.clone().unwrap());
        other.handle(&beacon(), at(2));
        let step = other.handle(&create("b"), at(2));
        store.saved = step.persist;
        gate.set_leadership(
            Leadership::Leader {
                epoch: 9,
                until_ms: u64::MAX,
            },
            Vec::new(),
        );
        assert!(gate.state().is_none());
        let tables = gate
            .request(
                &mut store,
                &Request::ListTables {
                    include_dropped: false,
                },
                at(3),
            )
            .unwrap();
        assert_eq!(gate.terms_started(), 2);
        assert_eq!(gate.epoch(), Some(9));
        let ResponseBody::Tables(tables) = tables else {
            panic!("{tables:?}")
        };
        assert_eq!(tables.len(), 2);
    }

    // A fenced save answers NOT_LEADER, changes nothing and ends the term.
    #[test]
    fn fenced_save_ends_the_term() {
        let mut store = MemoryMetaStore::default();
        let mut gate = LeaderGate::new(
            settings(),
            Leadership::Leader {
                epoch: 1,
                until_ms: u64::MAX,
            },
        );
        gate.request(&mut store, &beacon(), at(1)).unwrap();
        gate.request(&mut store, &create("a"), at(1)).unwrap();
        store.fenced_below_epoch = 2;
        let error = gate.request(&mut store, &create("b"), at(2)).unwrap_err();
        assert_eq!(error.code, ErrorCode::NotLeader);
        assert!(gate.state().is_none());
        assert_eq!(gate.leadership(), &Leadership::Follower { leader: None });
        assert_eq!(store.saved.unwrap().tables.len(), 1);
    }

    // cluster_info names the role, the leader, the epoch and the members.
    #[test]
    fn cluster_info_shows_the_group() {
        let mut store = MemoryMetaStore::default();
        let mut gate = LeaderGate::new(settings(), Leadership::Follower { leader: None });
        gate.set_leadership(
            Leadership::Leader {
                epoch: 5,
                until_ms: u64::MAX,
            },
            vec!["m1:1".into(), "m2:1".into()],
        );
        let Ok(ResponseBody::Pairs(pairs)) = gate.request(&mut store, &Request::ClusterInfo, at(1))
        else {
            panic!("cluster_info failed")
        };
        let value = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{key} missing"))
        };
        assert_eq!(value("meta_role"), "leader");
        assert_eq!(value("meta_leader"), "m1:1");
        assert_eq!(value("meta_epoch"), "5");
        assert_eq!(value("metas"), "m1:1,m2:1");
    }

    // A new term removes no member before every lease the previous term
    // granted has ended (**leader-waits-out-leases**): a member silent
    // since the term's first input is dead only a grace after it, and
    // grace_ms > lease_ms + beacon_interval_ms.
    #[test]
    fn a_new_term_waits_out_the_last_terms_leases() {
        let settings = MetaSettings {
            replication: Some(crate::meta::settings::MetaReplication {
                beacon_interval_ms: 100,
                lease_ms: 600,
                grace_ms: 800,
                replica_count_min_alive: 2,
                alive_percent_min: 50,
                ..Default::default()
            }),
            replica_count_default: 3,
            ..settings()
        };
        let beacon_of = |node: usize| {
            let Request::Beacon(beacon) = beacon() else {
                unreachable!()
            };
            Request::Beacon(markab_wire::message::NodeBeacon {
                node: format!("n{node}:1"),
                shard_addresses: vec![format!("n{node}:1")],
                ..beacon
            })
        };
        let members = |store: &MemoryMetaStore| {
            let partition = &store.saved.as_ref().unwrap().tables[&1].partitions[0];
            partition.secondaries.len() + 1
        };
        let mut store = MemoryMetaStore::default();
        let mut first = LeaderGate::new(
            settings.clone(),
            Leadership::Leader {
                epoch: 1,
                until_ms: 1_000,
            },
        );
        for node in 1..=3 {
            first.request(&mut store, &beacon_of(node), at(0)).unwrap();
        }
        let table = Request::CreateTable(CreateTableRequest {
            table: "t".into(),
            partition_count: 1,
            replica_count: 3,
            envs: Vec::new(),
            success_if_exist: false,
        });
        first.request(&mut store, &table, at(0)).unwrap();
        assert_eq!(members(&store), 3);
        // Term 2 starts on another meta at 5 s; node 3 never beacons it.
        store.fenced_below_epoch = 2;
        let mut second = LeaderGate::new(
            settings,
            Leadership::Leader {
                epoch: 2,
                until_ms: u64::MAX,
            },
        );
        let start_ms = 5_000;
        for now_ms in (start_ms..start_ms + 1_200).step_by(20) {
            for node in 1..=2 {
                second
                    .request(&mut store, &beacon_of(node), at(now_ms))
                    .unwrap();
            }
            second.tick(&mut store, at(now_ms)).unwrap();
            let expected = if now_ms < start_ms + 800 { 3 } else { 2 };
            assert_eq!(members(&store), expected, "at {now_ms} ms");
        }
    }

    #[test]
    fn session_ends_before_etcd_ends_it() {
        assert_eq!(session_until_ms(1_000, 2_000), 2_800);
        assert!(Leadership::Sole.serving(u64::MAX).is_some());
    }
}
