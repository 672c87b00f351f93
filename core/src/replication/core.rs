//! [`ReplicaCore`]: one partition replica's PacificA state machine, sans IO.
//!
//! The host feeds it [`Input`]s with the current time and carries out the
//! [`Output`]s it returns, in order: log appends, messages, applies, replies
//! and requests to meta. Nothing in here reads a clock, touches a file or
//! draws a random number, so the simulator under `tests/sim/` runs exactly
//! this code. Rules and invariant names: docs/replication.md.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::wire::message::Gpid;

use super::config::{ReplicationSettings, SettingsError};
use super::messages::{
    Ballot, Decree, Input, MetaRequest, Mutation, NodeId, Output, PartitionConfig, PeerMessage,
    PrepareError, ReadError, Role, Token, WriteError,
};

/// One mutation in the prepare window (decrees above the commit point).
#[derive(Clone, Debug)]
struct Entry {
    mutation: Mutation,
    /// The local log append of `mutation` (under its ballot) is durable.
    durable: bool,
    /// Secondaries that acked `mutation` under its ballot (primary only).
    acks: BTreeSet<NodeId>,
    /// When the primary first sent this mutation under its ballot.
    first_sent_ms: u64,
    /// When the primary last sent it to a lagging secondary.
    last_sent_ms: u64,
    /// The client write waiting for this decree (primary only).
    token: Option<Token>,
}

/// The replica state machine of one partition on one node.
///
/// A fresh replica is [`Role::Inactive`] at ballot 0 until a configuration
/// from meta names it. Example: a primary alone commits once its own log
/// append is durable.
///
/// ```
/// use markab_core::replication::config::ReplicationSettings;
/// use markab_core::replication::core::ReplicaCore;
/// use markab_core::replication::messages::*;
/// use markab_core::wire::message::Gpid;
///
/// let me = NodeId(1);
/// let mut core = ReplicaCore::new(Gpid::default(), me, ReplicationSettings::default()).unwrap();
/// core.handle(Input::Config(PartitionConfig {
///     ballot: 1,
///     primary: Some(me),
///     secondaries: vec![],
///     learners: vec![],
/// }), 0);
/// core.handle(Input::Lease { ballot: 1, until_ms: 600 }, 0);
/// let out = core.handle(Input::ClientWrite { token: 7, payload: vec![] }, 1);
/// assert!(matches!(out[0], Output::AppendLog(_)));
/// let out = core.handle(Input::LogDurable { ballot: 1, decree: 1 }, 2);
/// assert!(out.contains(&Output::WriteReply { token: 7, result: Ok(1) }));
/// ```
#[derive(Debug)]
pub struct ReplicaCore {
    gpid: Gpid,
    node: NodeId,
    settings: ReplicationSettings,
    role: Role,
    /// Never decreases (invariant **ballot-monotonic**).
    ballot: Ballot,
    /// The configuration this replica follows. A secondary that adopted a
    /// ballot from a Prepare knows only the primary of it.
    config: PartitionConfig,
    /// Prepared, uncommitted mutations by decree; every key is in
    /// `last_committed + 1 ..= last_committed + prepare_window_max`.
    window: BTreeMap<Decree, Entry>,
    /// Never decreases (invariant **commit-monotonic**).
    last_committed: Decree,
    /// Secondary: the highest commit point heard from a primary.
    commit_target: Decree,
    lease_until_ms: u64,
    /// A primary serves only once the tail it re-prepared has committed.
    activated: bool,
    /// A primary told by a secondary that a newer ballot exists: it serves
    /// nothing until meta's configuration of that ballot arrives, but keeps
    /// its waiting clients (see `on_prepare_ack`).
    superseded: bool,
    /// The last decree of the re-prepared tail.
    activation_decree: Decree,
    /// The highest commit point piggybacked to every secondary (and
    /// learner sent Prepares) at once.
    committed_sent: Decree,
    /// The decree of the last empty Prepare sent only to push the commit
    /// point. Its own commit changes no state, so it is never pushed in
    /// turn (else an idle primary would push forever).
    idle_push_decree: Decree,
    /// When the last Prepare went out.
    last_prepare_sent_ms: u64,
    /// When each secondary was last reported to meta as unreachable.
    removal_reported_ms: BTreeMap<NodeId, u64>,
    /// Primary: learners whose acks commit needs, each with the commit
    /// point it had when the learner caught up (docs/replication.md,
    /// "Learning"). Cleared by every configuration change.
    caught_up: BTreeMap<NodeId, Decree>,
    /// Primary: learners that asked at the current ballot, so know from
    /// meta that they are learners of it; only they get Prepares (a node
    /// that adopted the ballot from a Prepare would take itself for a
    /// secondary). Cleared by every configuration change.
    learners_heard: BTreeSet<NodeId>,
    /// Primary: caught-up learners it asked meta to promote (their request
    /// showed they hold everything up to where they caught up). A request
    /// from one with a lower commit point is stale: it gets no answer, and
    /// above all no copy (**no-copy-after-confirm**). Cleared by every
    /// configuration change.
    learners_confirmed: BTreeSet<NodeId>,
    /// The most recent committed mutations, contiguous, the last one at
    /// `last_committed` (at most `learn_cache_max`).
    cache: VecDeque<Mutation>,
    /// Learner: when it last asked the primary or made progress.
    learn_progress_ms: u64,
    /// The last learned mutation appended to the log and not yet durable;
    /// no `LearnRequest` goes out until it is (kept across role changes:
    /// a commit point is claimed only once durable).
    learn_durable_wait: Option<(Ballot, Decree)>,
    /// Primary: the first ballot of its current run as primary and its
    /// commit point when that run began. Every decree above that point was
    /// logged here under a ballot at least that one (the re-prepared tail
    /// and every proposal since), with the payload that committed.
    primary_since: Option<(Ballot, Decree)>,
    /// Learner: the decree of the copy its host is installing (storage was
    /// cleared for it, so the commit point is 0 and nothing is applied
    /// until it is installed or aborted; **copy-known-to-core**).
    copying: Option<Decree>,
    /// Primary: the secondary it hands its role to (meta's balancer asked,
    /// `Input::Handoff`) and when it last asked meta to switch (0: not
    /// yet). Cleared by every configuration change.
    handoff: Option<(NodeId, u64)>,
    outputs: Vec<Output>,
}

impl ReplicaCore {
    /// A new, empty, inactive replica. Fails if `settings` do not validate.
    pub fn new(
        gpid: Gpid,
        node: NodeId,
        settings: ReplicationSettings,
    ) -> Result<ReplicaCore, SettingsError> {
        settings.validate()?;
        Ok(ReplicaCore {
            gpid,
            node,
            settings,
            role: Role::Inactive,
            ballot: 0,
            config: PartitionConfig {
                ballot: 0,
                primary: None,
                secondaries: Vec::new(),
                learners: Vec::new(),
            },
            window: BTreeMap::new(),
            last_committed: 0,
            commit_target: 0,
            lease_until_ms: 0,
            activated: false,
            superseded: false,
            activation_decree: 0,
            committed_sent: 0,
            idle_push_decree: 0,
            last_prepare_sent_ms: 0,
            removal_reported_ms: BTreeMap::new(),
            caught_up: BTreeMap::new(),
            learners_heard: BTreeSet::new(),
            learners_confirmed: BTreeSet::new(),
            cache: VecDeque::new(),
            learn_progress_ms: 0,
            learn_durable_wait: None,
            primary_since: None,
            copying: None,
            handoff: None,
            outputs: Vec::new(),
        })
    }

    /// Rebuilds a replica after a restart from its durable log records (in
    /// append order) and the decree its storage has applied: [`Recovery`]
    /// fed every record, then finished. Returns the inactive replica and
    /// the committed mutations above `applied_decree` that the host must
    /// apply, in order.
    pub fn recover(
        gpid: Gpid,
        node: NodeId,
        settings: ReplicationSettings,
        applied_decree: Decree,
        log: impl IntoIterator<Item = Mutation>,
    ) -> Result<(ReplicaCore, Vec<Mutation>), SettingsError> {
        let mut recovery = Recovery::new(applied_decree);
        for mutation in log {
            recovery.push(
                mutation.ballot,
                mutation.decree,
                mutation.committed_decree,
                &mutation.payload,
            );
        }
        recovery.finish(gpid, node, settings)
    }

    /// The partition this replica belongs to.
    pub fn gpid(&self) -> Gpid {
        self.gpid
    }

    /// The node this replica runs on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The current role (a new replica starts `Inactive`).
    pub fn role(&self) -> Role {
        self.role
    }

    /// The highest ballot accepted (starts at 0).
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// The configuration followed; a secondary that adopted a ballot from a
    /// Prepare knows only its primary.
    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    /// The commit point: every decree up to it is applied here.
    pub fn last_committed(&self) -> Decree {
        self.last_committed
    }

    /// The end of the contiguous run of prepared decrees above the commit
    /// point (the commit point itself when there is none).
    pub fn last_prepared(&self) -> Decree {
        let mut last = self.last_committed;
        for decree in self.window.keys() {
            if *decree != last + 1 {
                break;
            }
            last = *decree;
        }
        last
    }

    /// Primary: the learners whose acks commit needs now.
    pub fn caught_up_learners(&self) -> Vec<NodeId> {
        self.caught_up.keys().copied().collect()
    }

    /// Primary: whether learner `node` learns from the stream now — it
    /// was answered from memory since it last needed storage, so a copy
    /// queued for it earlier answers a request it has moved past.
    pub fn learns_from_stream(&self, node: NodeId) -> bool {
        self.caught_up.contains_key(&node)
    }

    /// The first decree the in-memory learn cache holds (`None` when empty);
    /// it runs from there to the commit point.
    pub fn cache_start(&self) -> Option<Decree> {
        self.cache.front().map(|mutation| mutation.decree)
    }

    /// The `LearnResponse` a primary host sends after
    /// `Output::LearnFromStorage`: `mutations` must be the committed
    /// mutations read from its log, contiguous from at most the learner's
    /// `learner_committed + 1` up to [`ReplicaCore::last_committed`].
    pub fn learn_response(&self, mutations: Vec<Mutation>) -> PeerMessage {
        debug_assert!(mutations
            .last()
            .is_none_or(|last| last.decree == self.last_committed));
        PeerMessage::LearnResponse {
            ballot: self.ballot,
            committed_decree: self.last_committed,
            mutations,
        }
    }

    /// Whether a learner host may install a checkpoint at `decree` sent for
    /// `ballot`: this replica is a learner at that ballot and the
    /// checkpoint is ahead of its commit point. Feed
    /// `Input::CheckpointInstalled` once installed.
    pub fn accepts_checkpoint(&self, ballot: Ballot, decree: Decree) -> bool {
        self.role == Role::Learner && ballot == self.ballot && decree > self.last_committed
    }

    /// Whether a learner host may start installing a copy at `decree` sent
    /// for `ballot` in answer to a learn request made at commit point
    /// `learner_committed` — which empties its storage first. Only while
    /// this learner still stands where it asked
    /// (**copy-answers-its-request**): copies wait in the primary's queue,
    /// and a learner that has learned more since may be caught up, even
    /// confirmed to meta for promotion; emptying it then would make a
    /// secondary that holds nothing.
    pub fn accepts_copy(&self, ballot: Ballot, decree: Decree, learner_committed: Decree) -> bool {
        self.accepts_checkpoint(ballot, decree) && learner_committed == self.last_committed
    }

    /// Learner: the decree of the copy being installed, if any.
    pub fn copying(&self) -> Option<Decree> {
        self.copying
    }

    /// Primary: `(ballot, decree)` — every decree above `decree` is in this
    /// replica's log under a ballot of at least `ballot`, with the payload
    /// that committed (or will), so a host answering a learner above
    /// `decree` can take such records as they come, ignoring older
    /// ballots, without reading the whole log.
    pub fn primary_since(&self) -> Option<(Ballot, Decree)> {
        self.primary_since
    }

    /// Whether this primary finished re-preparing its predecessor's tail.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The node's lease end as last fed (0 = none).
    pub fn lease_until_ms(&self) -> u64 {
        self.lease_until_ms
    }

    /// Whether this replica would serve a client read at `now_ms`: primary,
    /// activated and within its lease.
    pub fn is_serving(&self, now_ms: u64) -> bool {
        self.serving_check(now_ms).is_ok()
    }

    /// Feeds one input at `now_ms` and returns the effects to carry out.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Output> {
        let mut outputs = Vec::new();
        self.handle_into(input, now_ms, &mut outputs);
        outputs
    }

    /// [`ReplicaCore::handle`] appending to the caller's buffer, so a host
    /// on the hot path reuses one allocation.
    pub fn handle_into(&mut self, input: Input, now_ms: u64, outputs: &mut Vec<Output>) {
        assert!(self.outputs.is_empty());
        std::mem::swap(&mut self.outputs, outputs);
        self.dispatch(input, now_ms);
        self.check_invariants();
        std::mem::swap(&mut self.outputs, outputs);
    }

    fn dispatch(&mut self, input: Input, now_ms: u64) {
        match input {
            Input::ClientWrite { token, payload } => self.on_client_write(token, payload, now_ms),
            Input::ClientRead { token } => {
                let result = self.serving_check(now_ms);
                self.outputs.push(Output::ReadReply { token, result });
            }
            Input::Peer { from, message } => match message {
                PeerMessage::Prepare {
                    ballot,
                    mutation,
                    committed_decree,
                } => self.on_prepare(from, ballot, mutation, committed_decree),
                PeerMessage::PrepareAck {
                    ballot,
                    decree,
                    result,
                } => self.on_prepare_ack(from, ballot, decree, result),
                PeerMessage::LearnRequest {
                    ballot,
                    learner_committed,
                } => self.on_learn_request(from, ballot, learner_committed, now_ms),
                PeerMessage::LearnResponse {
                    ballot,
                    committed_decree,
                    mutations,
                } => self.on_learn_response(from, ballot, committed_decree, mutations, now_ms),
            },
            Input::CheckpointInstalled { ballot, decree } => {
                self.on_checkpoint_installed(ballot, decree, now_ms)
            }
            Input::LogDurable { ballot, decree } => self.on_log_durable(ballot, decree, now_ms),
            Input::Config(config) => self.on_config(config, now_ms),
            Input::Lease { ballot, until_ms } => {
                // Granted for the configuration naming this node primary at
                // `ballot` only (**lease-per-ballot**): a replica meta has
                // replaced must not be kept serving by a lease meant for
                // the node's other partitions, or for an older ballot.
                if ballot == self.ballot && self.role == Role::Primary {
                    self.lease_until_ms = self.lease_until_ms.max(until_ms);
                }
            }
            Input::CopyStarted { ballot, decree } => self.on_copy_started(ballot, decree),
            Input::CopyAborted { ballot } => self.on_copy_aborted(ballot, now_ms),
            Input::Handoff { ballot, to } => self.on_handoff(ballot, to, now_ms),
            Input::PushCommit { decree } => self.push_commit(decree, now_ms),
            Input::Tick => self.on_tick(now_ms),
        }
    }

    /// `Input::PushCommit`: an empty write carrying the commit point, once,
    /// when `decree` committed here and no Prepare carried it yet.
    fn push_commit(&mut self, decree: Decree, now_ms: u64) {
        if self.role == Role::Primary
            && self.activated
            && !self.superseded
            && self.handoff.is_none()
            && self.last_committed >= decree
            && self.committed_sent < decree
            && self.window.len() < self.settings.prepare_window_max
            && !self.prepare_targets().is_empty()
        {
            self.idle_push_decree = self.last_prepared() + 1;
            self.propose(None, Vec::new(), now_ms);
        }
    }

    /// The balancer's handoff request (`Input::Handoff`).
    fn on_handoff(&mut self, ballot: Ballot, to: Option<NodeId>, now_ms: u64) {
        if self.role != Role::Primary || ballot != self.ballot {
            return;
        }
        match to {
            Some(node) if self.config.secondaries.contains(&node) => {
                if self.handoff.map(|(to, _)| to) != Some(node) {
                    self.handoff = Some((node, 0));
                }
                self.request_switch(now_ms);
            }
            _ => self.handoff = None,
        }
    }

    /// A primary handing off asks meta to switch once nothing is in flight
    /// (again every `learn_retry_ms` until the configuration changes).
    /// Only an activated primary asks: its commit point covers every decree
    /// ever committed, so its secondaries hold them all.
    fn request_switch(&mut self, now_ms: u64) {
        let Some((node, asked_ms)) = self.handoff else {
            return;
        };
        let due = asked_ms == 0 || now_ms >= asked_ms + self.settings.learn_retry_ms;
        if self.activated && !self.superseded && self.window.is_empty() && due {
            self.handoff = Some((node, now_ms.max(1)));
            self.outputs
                .push(Output::ToMeta(MetaRequest::SwitchPrimary {
                    ballot: self.ballot,
                    node,
                }));
        }
    }

    /// Whether this replica serves a client request at `now_ms`: only an
    /// activated, not superseded primary within its lease (rule 12).
    pub fn serving_check(&self, now_ms: u64) -> Result<(), ReadError> {
        if self.role != Role::Primary {
            return Err(ReadError::NotPrimary);
        }
        if !self.activated || self.superseded {
            return Err(ReadError::NotActivated);
        }
        if now_ms >= self.lease_until_ms {
            return Err(ReadError::LeaseExpired);
        }
        Ok(())
    }

    // ---- primary: the write path ----

    fn on_client_write(&mut self, token: Token, payload: Vec<u8>, now_ms: u64) {
        let refused = match self.serving_check(now_ms) {
            Err(error) => Some(WriteError::from(error)),
            // Handing off: the role goes to a secondary as soon as nothing
            // is in flight; the client retries there.
            Ok(()) if self.handoff.is_some() => Some(WriteError::NotPrimary),
            Ok(()) if self.window.len() >= self.settings.prepare_window_max => {
                Some(WriteError::Busy {
                    window_max: self.settings.prepare_window_max,
                })
            }
            Ok(()) => None,
        };
        match refused {
            Some(error) => self.outputs.push(Output::WriteReply {
                token,
                result: Err(error),
            }),
            None => self.propose(Some(token), payload, now_ms),
        }
    }

    /// Assigns the next decree to `payload`, logs it and sends it to every
    /// secondary.
    fn propose(&mut self, token: Option<Token>, payload: Vec<u8>, now_ms: u64) {
        assert_eq!(self.role, Role::Primary);
        assert!(self.activated);
        assert!(self.window.len() < self.settings.prepare_window_max);
        let decree = self.last_prepared() + 1;
        let mutation = Mutation {
            ballot: self.ballot,
            decree,
            committed_decree: self.last_committed,
            payload,
        };
        let mut entry = Entry::durable(mutation.clone());
        entry.durable = false;
        entry.token = token;
        entry.first_sent_ms = now_ms;
        assert!(self.window.insert(decree, entry).is_none());
        self.outputs.push(Output::AppendLog(mutation));
        let targets = self.prepare_targets();
        self.send_prepare(decree, &targets, now_ms);
    }

    /// Everyone a primary sends Prepares to: secondaries and the learners
    /// that asked at this ballot.
    fn prepare_targets(&self) -> Vec<NodeId> {
        let mut targets = self.config.secondaries.clone();
        targets.extend(self.learners_heard.iter().copied());
        targets
    }

    /// Everyone whose ack commit needs: secondaries and caught-up learners
    /// (invariant **commit-needs-all**).
    fn required_ackers(&self) -> Vec<NodeId> {
        let mut ackers = self.config.secondaries.clone();
        ackers.extend(self.caught_up.keys().copied());
        ackers
    }

    fn send_prepare(&mut self, decree: Decree, targets: &[NodeId], now_ms: u64) {
        let Some(entry) = self.window.get_mut(&decree) else {
            return;
        };
        entry.last_sent_ms = now_ms;
        for to in targets {
            self.outputs.push(Output::Send {
                to: *to,
                message: PeerMessage::Prepare {
                    ballot: self.ballot,
                    mutation: entry.mutation.clone(),
                    committed_decree: self.last_committed,
                },
            });
        }
        if !targets.is_empty() {
            // Only a Prepare to every target tells them all the commit
            // point: a resend to a lagging one does not tell the others.
            if targets.len() >= self.config.secondaries.len() + self.learners_heard.len() {
                self.committed_sent = self.committed_sent.max(self.last_committed);
            }
            self.last_prepare_sent_ms = now_ms;
        }
    }

    fn on_prepare_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        decree: Decree,
        result: Result<(), PrepareError>,
    ) {
        if self.role != Role::Primary {
            return;
        }
        match result {
            Err(PrepareError::StaleBallot { ballot: newer }) if newer > self.ballot => {
                // A newer configuration exists. Stop serving at once, but
                // keep the waiting clients: when meta's configuration names
                // this node primary again (the common case: a secondary was
                // removed and the secondary heard first) it re-prepares their
                // decrees and answers them; any other role answers them
                // `UnknownOutcome` (`change_role`).
                self.superseded = true;
            }
            Ok(())
                if ballot == self.ballot
                    && (self.config.secondaries.contains(&from)
                        || self.config.learners.contains(&from)) =>
            {
                if let Some(entry) = self.window.get_mut(&decree) {
                    if entry.mutation.ballot == ballot {
                        entry.acks.insert(from);
                        self.try_commit_primary();
                    }
                }
            }
            // Old acks, acks from non-members and other refusals: the
            // resend and the prepare timeout deal with the secondary.
            _ => {}
        }
    }

    /// Commits, in decree order, every mutation that is durable here under
    /// the current ballot and acked by every current secondary and every
    /// caught-up learner (invariant **commit-needs-all**).
    fn try_commit_primary(&mut self) {
        assert_eq!(self.role, Role::Primary);
        let ackers = self.required_ackers();
        while let Some(entry) = self.window.get(&(self.last_committed + 1)) {
            let acked_by_all = ackers.iter().all(|node| entry.acks.contains(node));
            if !(entry.durable && entry.mutation.ballot == self.ballot && acked_by_all) {
                break;
            }
            self.commit_next();
        }
        if !self.activated && self.last_committed >= self.activation_decree {
            self.activated = true;
        }
    }

    /// Applies decree `last_committed + 1` and answers its client.
    fn commit_next(&mut self) {
        let decree = self.last_committed + 1;
        let entry = self
            .window
            .remove(&decree)
            .expect("commit_next is called only for a held decree");
        assert_eq!(entry.mutation.decree, decree);
        assert!(entry.durable, "a decree commits only once durable here");
        assert!(entry.mutation.ballot <= self.ballot);
        self.last_committed = decree;
        self.remember(entry.mutation.clone());
        self.outputs.push(Output::Apply(entry.mutation));
        if let Some(token) = entry.token {
            self.outputs.push(Output::WriteReply {
                token,
                result: Ok(decree),
            });
        }
    }

    // ---- secondary ----

    fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        mutation: Mutation,
        committed_decree: Decree,
    ) {
        let decree = mutation.decree;
        if mutation.ballot != ballot || decree == 0 {
            return; // malformed: not from a primary of ours
        }
        let refusal = if ballot < self.ballot {
            Some(PrepareError::StaleBallot {
                ballot: self.ballot,
            })
        } else if self.role == Role::Inactive
            || (self.role == Role::Learner && ballot > self.ballot)
        {
            // A learner takes Prepares only from its primary at its ballot;
            // it becomes a secondary only by a configuration from meta.
            Some(PrepareError::NotMember)
        } else if ballot == self.ballot
            && (self.role == Role::Primary || self.config.primary != Some(from))
        {
            Some(PrepareError::WrongPrimary)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.ack(from, ballot, decree, Err(error));
            return;
        }
        if ballot > self.ballot {
            self.set_ballot(ballot);
            self.config = PartitionConfig {
                ballot,
                primary: Some(from),
                secondaries: Vec::new(),
                learners: Vec::new(),
            };
            self.change_role(Role::Secondary);
        }
        self.commit_target = self.commit_target.max(committed_decree);
        self.try_commit_secondary();
        if decree <= self.last_committed {
            self.ack(from, ballot, decree, Ok(()));
            return;
        }
        if decree > self.last_committed + self.settings.prepare_window_max as Decree {
            self.ack(
                from,
                ballot,
                decree,
                Err(PrepareError::WindowFull { decree }),
            );
            return;
        }
        if let Some(held) = self.window.get(&decree) {
            assert!(held.mutation.ballot <= ballot);
            if held.mutation.ballot == ballot {
                if held.durable {
                    self.ack(from, ballot, decree, Ok(()));
                }
                return; // acked when its append is durable
            }
        }
        // A secondary takes its primary's Prepares in decree order: one
        // whose predecessor it does not hold at this ballot waits for the
        // resend (**secondary-prefix-in-order**). Otherwise a reordered
        // Prepare could sit above an older history it was not built on.
        // A learner joins the stream above what it is still learning.
        if self.role == Role::Secondary
            && decree > self.last_committed + 1
            && self
                .window
                .get(&(decree - 1))
                .is_none_or(|previous| previous.mutation.ballot != ballot)
        {
            return;
        }
        // The same mutation re-prepared under a newer ballot (equal
        // payload: the same absolute writes) leaves what follows it valid.
        let re_prepared = self
            .window
            .get(&decree)
            .is_some_and(|held| held.mutation.payload == mutation.payload);
        let mut mutation = mutation;
        if self.role == Role::Learner {
            // A learner's log may still hold records of an older history
            // at decrees it has not learned yet; a logged commit point
            // above its own would make recovery replay those as committed.
            // It claims only what it holds (docs/replication.md, "Learning").
            mutation.committed_decree = mutation.committed_decree.min(self.last_committed);
        }
        // The primary of `ballot` decides decree `decree`. When it differs
        // from what this replica held there, whatever older ballots left
        // above was built on another prefix and is dropped (the primary
        // re-prepares what it holds). When it is the held mutation
        // re-prepared, what follows stays until its own re-prepare replaces
        // it: dropping it early could drop a committed mutation that the
        // primary's re-prepare has not yet brought back, and a replica
        // elected in between would lose it (**re-prepare-keeps-tail**).
        if !re_prepared || self.role == Role::Learner {
            self.window
                .retain(|held, entry| *held < decree || entry.mutation.ballot >= ballot);
        }
        self.window.insert(decree, Entry::durable(mutation.clone()));
        self.window.get_mut(&decree).expect("inserted").durable = false;
        self.outputs.push(Output::AppendLog(mutation));
    }

    fn ack(
        &mut self,
        to: NodeId,
        ballot: Ballot,
        decree: Decree,
        result: Result<(), PrepareError>,
    ) {
        self.outputs.push(Output::Send {
            to,
            message: PeerMessage::PrepareAck {
                ballot,
                decree,
                result,
            },
        });
    }

    /// Applies, in order, held durable mutations up to the primary's
    /// commit point.
    fn try_commit_secondary(&mut self) {
        if self.copying.is_some() {
            return; // storage holds part of a copy (**copy-known-to-core**)
        }
        while self.last_committed < self.commit_target {
            match self.window.get(&(self.last_committed + 1)) {
                Some(entry) if entry.durable => self.commit_next(),
                _ => break,
            }
        }
    }

    fn on_log_durable(&mut self, ballot: Ballot, decree: Decree, now_ms: u64) {
        if self.learn_durable_wait == Some((ballot, decree)) {
            // Every learned mutation is durable (the log is prefix-durable):
            // ask for what follows.
            self.learn_durable_wait = None;
            if self.role == Role::Learner {
                self.send_learn_request(now_ms);
            }
        }
        let Some(entry) = self.window.get_mut(&decree) else {
            return; // committed already, or dropped
        };
        if entry.mutation.ballot != ballot {
            return; // an append the window has since replaced
        }
        entry.durable = true;
        match self.role {
            Role::Primary => self.try_commit_primary(),
            Role::Secondary | Role::Learner => {
                if ballot == self.ballot {
                    if let Some(primary) = self.config.primary {
                        self.ack(primary, ballot, decree, Ok(()));
                    }
                }
                self.try_commit_secondary();
            }
            Role::Inactive => {}
        }
    }

    // ---- configuration ----

    fn on_config(&mut self, config: PartitionConfig, now_ms: u64) {
        if !config.is_well_formed() || config.ballot <= self.ballot {
            return; // malformed or not newer: ignored
        }
        self.set_ballot(config.ballot);
        self.superseded = false;
        // A copy is sent for one ballot; the host drops one in progress
        // when the ballot moves (its storage is empty again, so the commit
        // point of 0 stays true).
        self.copying = None;
        let role = if config.primary == Some(self.node) {
            Role::Primary
        } else if config.secondaries.contains(&self.node) {
            Role::Secondary
        } else if config.learners.contains(&self.node) {
            Role::Learner
        } else {
            Role::Inactive
        };
        // A switch: the primary this replica followed stays a secondary.
        let took_over = self.config.primary.is_some_and(|previous| {
            previous != self.node && config.secondaries.contains(&previous)
        });
        self.config = config;
        self.caught_up.clear();
        self.learners_confirmed.clear();
        self.learners_heard.clear();
        self.handoff = None;
        if role == Role::Primary && self.role != Role::Primary {
            self.primary_since = Some((self.ballot, self.last_committed));
        }
        self.change_role(role);
        match role {
            Role::Primary => self.become_primary(now_ms, took_over),
            Role::Learner => self.become_learner(now_ms),
            Role::Secondary | Role::Inactive => {}
        }
    }

    /// Re-prepares the tail above the commit point under the new ballot;
    /// the primary serves once all of it committed.
    fn become_primary(&mut self, now_ms: u64, took_over: bool) {
        let last_prepared = self.last_prepared();
        self.window.retain(|decree, _| *decree <= last_prepared);
        self.activation_decree = last_prepared;
        self.activated = false;
        self.committed_sent = 0;
        self.idle_push_decree = 0;
        self.removal_reported_ms.clear();
        if self.window.is_empty() && took_over {
            // A switch with nothing to re-prepare: an empty write makes the
            // tail, so that the primary serves only once every secondary
            // took the new ballot — the primary it replaces, a secondary
            // now, steps down on that Prepare
            // (**switch-serves-after-old-primary-steps-down**), so the two
            // never serve at once, whatever lease the old one still holds.
            let decree = self.last_committed + 1;
            let mut entry = Entry::durable(Mutation {
                ballot: self.ballot,
                decree,
                committed_decree: self.last_committed,
                payload: Vec::new(),
            });
            entry.durable = false;
            self.window.insert(decree, entry);
            self.activation_decree = decree;
        }
        let tail: Vec<Decree> = self.window.keys().copied().collect();
        for decree in tail {
            let entry = self.window.get_mut(&decree).expect("tail decree");
            entry.mutation.ballot = self.ballot;
            entry.mutation.committed_decree = self.last_committed;
            entry.durable = false;
            entry.acks.clear();
            entry.first_sent_ms = now_ms;
            let mutation = entry.mutation.clone();
            self.outputs.push(Output::AppendLog(mutation));
            let targets = self.prepare_targets();
            self.send_prepare(decree, &targets, now_ms);
        }
        self.try_commit_primary();
    }

    /// Moves to `role` (ballot already set); a primary that stops being one
    /// answers its waiting writes "unknown outcome".
    fn change_role(&mut self, role: Role) {
        if self.role == Role::Primary && role != Role::Primary {
            for entry in self.window.values_mut() {
                if let Some(token) = entry.token.take() {
                    self.outputs.push(Output::WriteReply {
                        token,
                        result: Err(WriteError::UnknownOutcome),
                    });
                }
            }
        }
        if role != Role::Primary {
            self.handoff = None;
            self.activated = false;
            self.superseded = false;
            self.caught_up.clear();
            self.learners_confirmed.clear();
            self.learners_heard.clear();
            // A lease is meta's word that this node is the primary; it
            // does not outlive the role (**lease-per-ballot**).
            self.lease_until_ms = 0;
            self.primary_since = None;
        }
        self.role = role;
        self.outputs.push(Output::RoleChanged {
            role,
            ballot: self.ballot,
        });
    }

    fn set_ballot(&mut self, ballot: Ballot) {
        assert!(ballot >= self.ballot, "ballot-monotonic");
        self.ballot = ballot;
    }

    // ---- learning (docs/replication.md, "Learning") ----

    /// Keeps `mutation` (just committed at `last_committed + 1`, or being
    /// committed) in the learn cache.
    fn remember(&mut self, mutation: Mutation) {
        if self
            .cache
            .back()
            .is_some_and(|last| last.decree + 1 != mutation.decree)
        {
            self.cache.clear();
        }
        self.cache.push_back(mutation);
        while self.cache.len() > self.settings.learn_cache_max {
            self.cache.pop_front();
        }
    }

    /// A configuration made this replica a learner: it drops its
    /// uncommitted tail (learning restarts from the commit point) and asks
    /// the primary for what follows once its commit point is durable.
    fn become_learner(&mut self, now_ms: u64) {
        self.window.clear();
        self.commit_target = self.last_committed;
        if self.learn_durable_wait.is_none() {
            self.send_learn_request(now_ms);
        } else {
            // Mutations learned earlier are not durable yet: its commit
            // point is claimed only once they are (on_log_durable asks).
            self.learn_progress_ms = now_ms;
        }
    }

    fn send_learn_request(&mut self, now_ms: u64) {
        self.learn_progress_ms = now_ms;
        if let Some(primary) = self.config.primary {
            self.outputs.push(Output::Send {
                to: primary,
                message: PeerMessage::LearnRequest {
                    ballot: self.ballot,
                    learner_committed: self.last_committed,
                },
            });
        }
    }

    /// Primary: a learner of the current configuration holds every committed
    /// decree up to `learner_committed`.
    fn on_learn_request(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        learner_committed: Decree,
        now_ms: u64,
    ) {
        if self.role != Role::Primary
            || ballot != self.ballot
            || !self.config.learners.contains(&from)
        {
            return; // a stale learner hears of the new configuration from meta
        }
        if self.learners_heard.insert(from) {
            // It knows it is a learner of this ballot: from now on it gets
            // every Prepare, starting with the whole window.
            let decrees: Vec<Decree> = self.window.keys().copied().collect();
            for decree in decrees {
                self.send_prepare(decree, &[from], now_ms);
            }
        }
        if let Some(caught_up_at) = self.caught_up.get(&from) {
            if learner_committed < *caught_up_at && self.learners_confirmed.contains(&from) {
                // Sent before the learner caught up, and overtaken: it holds
                // more already, and meta may be promoting it right now.
                return;
            }
            if learner_committed >= *caught_up_at {
                // It holds everything up to where it caught up, and every
                // decree committed since needed its ack. Only an activated
                // primary's commit point covers every decree ever committed
                // (its re-prepared tail may hold some committed under an
                // earlier ballot): until then the learner asks again later.
                // (Repeated on each retry until promoted.)
                if self.activated {
                    self.learners_confirmed.insert(from);
                    self.outputs
                        .push(Output::ToMeta(MetaRequest::UpgradeLearner {
                            ballot: self.ballot,
                            node: from,
                        }));
                }
                return;
            }
        }
        let covered = learner_committed >= self.last_committed
            || self
                .cache_start()
                .is_some_and(|start| start <= learner_committed + 1);
        if !covered {
            // The host may answer with a copy, which empties the learner's
            // storage: it no longer counts as caught up, so no confirmation
            // it sent before can have it promoted; it is marked again from
            // memory once it holds the copy.
            if self.caught_up.remove(&from).is_some() {
                self.try_commit_primary();
            }
            self.outputs.push(Output::LearnFromStorage {
                to: from,
                ballot: self.ballot,
                learner_committed,
            });
            return;
        }
        let mutations: Vec<Mutation> = self
            .cache
            .iter()
            .filter(|mutation| mutation.decree > learner_committed)
            .cloned()
            .collect();
        // From now on commit waits for this learner's acks: whatever
        // commits after this point is durable on it, whatever committed
        // before is in this response.
        self.caught_up.entry(from).or_insert(self.last_committed);
        self.outputs.push(Output::Send {
            to: from,
            message: PeerMessage::LearnResponse {
                ballot: self.ballot,
                committed_decree: self.last_committed,
                mutations,
            },
        });
    }

    /// Learner: committed mutations from the primary's cache or log.
    fn on_learn_response(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        committed_decree: Decree,
        mutations: Vec<Mutation>,
        now_ms: u64,
    ) {
        if self.role != Role::Learner
            || ballot != self.ballot
            || self.config.primary != Some(from)
            || self.copying.is_some()
        {
            // While a copy is installed, storage holds part of it: learned
            // mutations wait until it is complete (**copy-known-to-core**).
            return;
        }
        let mut learned = None;
        for mutation in mutations {
            if mutation.decree <= self.last_committed {
                continue;
            }
            if mutation.decree != self.last_committed + 1 || mutation.decree > committed_decree {
                break; // not contiguous with what is held: ignore the rest
            }
            learned = Some((mutation.ballot, mutation.decree));
            self.apply_learned(mutation, committed_decree);
        }
        if self.last_committed >= committed_decree {
            self.commit_target = self.commit_target.max(committed_decree);
        }
        let last_committed = self.last_committed;
        self.window.retain(|decree, _| *decree > last_committed);
        self.try_commit_secondary();
        match learned {
            Some(last) => {
                self.learn_progress_ms = now_ms;
                self.learn_durable_wait = Some(last);
            }
            None if self.learn_durable_wait.is_none() && last_committed >= committed_decree => {
                // Nothing was missing: tell the primary so at once.
                self.send_learn_request(now_ms);
            }
            None => {}
        }
    }

    /// Applies a learned committed mutation at `last_committed + 1` and logs
    /// it marked committed up to its own decree, so recovery replays it.
    /// Never higher (**learned-claims-itself**): the response's commit point
    /// may lie beyond what this learner holds (a response from the log is
    /// cut short), and a logged claim above it would make recovery replay
    /// records of an older history still in the log as committed.
    fn apply_learned(&mut self, mutation: Mutation, committed_decree: Decree) {
        assert_eq!(mutation.decree, self.last_committed + 1);
        assert!(mutation.decree <= committed_decree);
        self.window.remove(&mutation.decree);
        self.last_committed = mutation.decree;
        let mut logged = mutation.clone();
        logged.committed_decree = mutation.decree;
        self.remember(mutation.clone());
        self.outputs.push(Output::AppendLog(logged));
        self.outputs.push(Output::Apply(mutation));
    }

    /// Learner: the host cleared its storage to install a copy at `decree`:
    /// what it held is gone, so its commit point is 0 until the copy is
    /// installed (the only way a commit point goes down).
    fn on_copy_started(&mut self, ballot: Ballot, decree: Decree) {
        if !self.accepts_checkpoint(ballot, decree) {
            return;
        }
        self.copying = Some(decree);
        self.last_committed = 0;
        self.commit_target = 0;
        // What it acked above the copy stays (**acked-stays-held**): the
        // primary counted those acks toward commit. What lies at or below
        // the copy's decree is committed and in the copy.
        self.window
            .retain(|held, entry| *held > decree && entry.mutation.ballot == ballot);
        self.cache.clear();
        self.learn_durable_wait = None;
    }

    /// Learner: the copy for `ballot` will not complete; storage is empty.
    fn on_copy_aborted(&mut self, ballot: Ballot, now_ms: u64) {
        if self.role != Role::Learner || ballot != self.ballot || self.copying.is_none() {
            return;
        }
        self.copying = None;
        self.send_learn_request(now_ms);
    }

    /// Learner: the host installed the primary's checkpoint at `decree`.
    fn on_checkpoint_installed(&mut self, ballot: Ballot, decree: Decree, now_ms: u64) {
        if !self.accepts_checkpoint(ballot, decree) {
            return;
        }
        self.copying = None;
        self.last_committed = decree;
        self.commit_target = self.commit_target.max(decree);
        self.window.retain(|held, _| *held > decree);
        self.cache.clear();
        self.learn_durable_wait = None;
        self.try_commit_secondary();
        self.send_learn_request(now_ms);
    }

    // ---- time ----

    fn on_tick(&mut self, now_ms: u64) {
        if self.role == Role::Learner
            && self.learn_durable_wait.is_none()
            && now_ms >= self.learn_progress_ms + self.settings.learn_retry_ms
        {
            self.send_learn_request(now_ms);
        }
        if self.role != Role::Primary || self.superseded {
            return;
        }
        let targets = self.prepare_targets();
        let ackers = self.required_ackers();
        let decrees: Vec<Decree> = self.window.keys().copied().collect();
        let mut unreachable: BTreeSet<NodeId> = BTreeSet::new();
        for decree in decrees {
            let entry = &self.window[&decree];
            let missing: Vec<NodeId> = targets
                .iter()
                .copied()
                .filter(|node| !entry.acks.contains(node))
                .collect();
            if missing.is_empty() {
                continue;
            }
            if now_ms >= entry.first_sent_ms + self.settings.prepare_timeout_ms {
                // Only those commit waits for are reported; a learner that
                // has not caught up stalls nothing.
                unreachable.extend(missing.iter().copied().filter(|n| ackers.contains(n)));
            }
            if now_ms >= entry.last_sent_ms + self.settings.prepare_resend_ms {
                self.send_prepare(decree, &missing, now_ms);
            }
        }
        for node in unreachable {
            let due = self
                .removal_reported_ms
                .get(&node)
                .is_none_or(|at| now_ms >= at + self.settings.prepare_timeout_ms);
            if due {
                self.removal_reported_ms.insert(node, now_ms);
                self.outputs
                    .push(Output::ToMeta(MetaRequest::RemoveSecondary {
                        ballot: self.ballot,
                        node,
                    }));
            }
        }
        self.request_switch(now_ms);
        let idle = now_ms >= self.last_prepare_sent_ms + self.settings.idle_commit_push_ms;
        if self.activated
            && self.handoff.is_none()
            && idle
            && !targets.is_empty()
            && self.last_committed > self.committed_sent.max(self.idle_push_decree)
            && self.window.len() < self.settings.prepare_window_max
        {
            self.idle_push_decree = self.last_prepared() + 1;
            self.propose(None, Vec::new(), now_ms);
        }
    }

    /// The state invariants, checked after every input.
    fn check_invariants(&self) {
        assert!(self.last_committed <= self.last_prepared());
        assert!(self.config.ballot <= self.ballot);
        assert!(self.config.is_well_formed());
        assert!(self
            .cache
            .back()
            .is_none_or(|last| last.decree == self.last_committed));
        assert!(self.cache.len() <= self.settings.learn_cache_max);
        if self.role == Role::Primary {
            assert!(self
                .caught_up
                .keys()
                .all(|node| self.learners_heard.contains(node)));
            assert!(self
                .learners_heard
                .iter()
                .all(|node| self.config.learners.contains(node)));
        } else {
            assert!(self.caught_up.is_empty());
            assert!(self.learners_heard.is_empty());
        }
        let window_max = self.settings.prepare_window_max as Decree;
        for (decree, entry) in &self.window {
            assert_eq!(*decree, entry.mutation.decree);
            assert!(*decree > self.last_committed);
            // A learner may hold acked Prepares far above what it is still
            // learning (its commit point drops to 0 for a copy).
            assert!(self.role == Role::Learner || *decree <= self.last_committed + window_max);
            assert!(entry.mutation.ballot <= self.ballot);
        }
        if self.activated {
            assert_eq!(self.role, Role::Primary);
        }
        if self.copying.is_some() {
            assert_eq!(self.role, Role::Learner);
            assert_eq!(self.last_committed, 0);
        }
        if self.role != Role::Primary {
            assert_eq!(self.lease_until_ms, 0, "lease-per-ballot");
            assert!(self.primary_since.is_none());
        } else {
            assert!(self.primary_since.is_some_and(
                |(ballot, decree)| ballot <= self.ballot && decree <= self.last_committed
            ));
        }
        if self.role == Role::Primary {
            assert_eq!(
                self.last_prepared(),
                self.window
                    .keys()
                    .last()
                    .copied()
                    .unwrap_or(self.last_committed)
            );
            assert!(self
                .window
                .values()
                .all(|e| e.mutation.ballot == self.ballot));
        } else {
            assert!(self.window.values().all(|e| e.token.is_none()));
        }
    }
}

/// Rebuilds a replica from its durable log after a restart, one record at
/// a time in append order, so a host can feed it while it reads the log.
///
/// Rules (docs/replication.md, "Rules", recovery): a later record of a decree
/// replaces an earlier one of a lower or equal ballot; a record that
/// replaces a *different* mutation under an older ballot voids the
/// older-ballot records logged above it, as when it was accepted
/// (`on_prepare`). The void rule runs over every record — those at or below
/// the applied decree too — and only then is the log cut at the applied
/// decree (**void-before-cut**): a mutation that replaced another and was
/// applied still voids what the old history left above it. Records at or
/// below the applied decree are never replayed, so only their ballot and a
/// keyed 64-bit digest of their payload are kept (16 bytes each, bounded by
/// the log's size); records above it are kept whole.
///
/// ```
/// use markab_core::replication::config::ReplicationSettings;
/// use markab_core::replication::core::Recovery;
/// use markab_core::replication::messages::NodeId;
/// use markab_core::wire::message::Gpid;
///
/// let mut recovery = Recovery::new(0);
/// recovery.push(1, 1, 0, b"a");
/// recovery.push(1, 2, 1, b"b");
/// let (core, replay) = recovery
///     .finish(Gpid::default(), NodeId(1), ReplicationSettings::default())
///     .unwrap();
/// assert_eq!(replay.len(), 1); // decree 1 is committed (logged with decree 2)
/// assert_eq!(core.last_prepared(), 2);
/// ```
#[derive(Debug)]
pub struct Recovery {
    applied_decree: Decree,
    ballot: Ballot,
    committed_logged: Decree,
    /// Records above the applied decree: replayed or kept as the tail.
    above: BTreeMap<Decree, Mutation>,
    /// Records at or below it: (ballot, payload digest), for the void rule.
    applied: BTreeMap<Decree, (Ballot, u64)>,
    digests: std::collections::hash_map::RandomState,
}

impl Recovery {
    /// A recovery of a replica whose storage applied `applied_decree`.
    pub fn new(applied_decree: Decree) -> Recovery {
        Recovery {
            applied_decree,
            ballot: 0,
            committed_logged: 0,
            above: BTreeMap::new(),
            applied: BTreeMap::new(),
            digests: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The next durable log record of the replica, in append order.
    pub fn push(
        &mut self,
        ballot: Ballot,
        decree: Decree,
        committed_decree: Decree,
        payload: &[u8],
    ) {
        use std::hash::BuildHasher;
        self.ballot = self.ballot.max(ballot);
        self.committed_logged = self.committed_logged.max(committed_decree);
        let digest = self.digests.hash_one(payload);
        let held = match self.above.get(&decree) {
            Some(held) => Some((held.ballot, held.payload.as_slice() != payload)),
            None => self
                .applied
                .get(&decree)
                .map(|(held_ballot, held_digest)| (*held_ballot, *held_digest != digest)),
        };
        if held.is_some_and(|(held_ballot, _)| held_ballot > ballot) {
            return; // an older record of a decree replaced by a newer ballot
        }
        if held.is_some_and(|(held_ballot, differs)| held_ballot < ballot && differs) {
            // Built on another prefix: void the older ballots' records above.
            self.above
                .retain(|held, record| *held < decree || record.ballot >= ballot);
            self.applied
                .retain(|held, (held_ballot, _)| *held < decree || *held_ballot >= ballot);
        }
        if decree > self.applied_decree {
            self.above.insert(
                decree,
                Mutation {
                    ballot,
                    decree,
                    committed_decree,
                    payload: payload.to_vec(),
                },
            );
        } else {
            self.applied.insert(decree, (ballot, digest));
        }
    }

    /// The inactive replica and the committed mutations above the applied
    /// decree that the host must apply, in order. The commit point is the
    /// highest one logged with any record; records above a gap are dropped.
    pub fn finish(
        self,
        gpid: Gpid,
        node: NodeId,
        settings: ReplicationSettings,
    ) -> Result<(ReplicaCore, Vec<Mutation>), SettingsError> {
        let mut core = ReplicaCore::new(gpid, node, settings)?;
        let mut records = self.above;
        core.ballot = self.ballot;
        core.config.ballot = core.ballot;
        core.last_committed = self.applied_decree;
        let mut replay = Vec::new();
        let mut next = self.applied_decree + 1;
        while let Some(mutation) = records.remove(&next) {
            if next <= self.committed_logged {
                core.remember(mutation.clone());
                replay.push(mutation);
                core.last_committed = next;
            } else if next <= core.last_committed + settings.prepare_window_max as Decree {
                core.window.insert(next, Entry::durable(mutation));
            } else {
                break;
            }
            next += 1;
        }
        core.commit_target = core.last_committed;
        core.check_invariants();
        Ok((core, replay))
    }
}

impl Entry {
    /// A recovered (durable, unacknowledged) entry.
    fn durable(mutation: Mutation) -> Entry {
        Entry {
            mutation,
            durable: true,
            acks: BTreeSet::new(),
            first_sent_ms: 0,
            last_sent_ms: 0,
            token: None,
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
