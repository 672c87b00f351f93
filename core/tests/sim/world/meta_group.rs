//! The meta group (docs/meta-ha.md, "In the simulator"): each meta's campaign against
//! the simulated etcd (keepalives, answers, the election's watch), the
//! nodes' choice of meta (redirected by `NOT_LEADER`, moving on when one
//! is silent), the group's faults (the leader paused past its session or
//! crashed) and its invariants.

use markab_core::meta::leader::Leadership;
use markab_core::replication::messages::NodeId;
use rand::Rng;

use super::super::model::{Addr, Event};
use super::{parse_meta_address, World, ETCD_DELAY_MAX_MS, META_SWITCH_MS};

impl World {
    /// The meta `node` sends its beacons and requests to: the one it last
    /// heard from, or the next when that one was silent too long.
    pub(super) fn meta_target(&mut self, node: NodeId) -> usize {
        let count = self.meta.count();
        let (meta, heard_ms) = self.meta_routes[&node];
        if count == 1 || self.now_ms < heard_ms + META_SWITCH_MS {
            return meta;
        }
        let next = (meta + 1) % count;
        self.meta_routes.insert(node, (next, self.now_ms));
        next
    }

    /// `node` heard `NOT_LEADER` from `from`: it goes to the leader named,
    /// or to the next meta when none is.
    pub(super) fn redirected(&mut self, node: NodeId, from: Addr, leader: &str) {
        let Addr::Meta(meta) = from else { return };
        let next = parse_meta_address(leader).unwrap_or((meta + 1) % self.meta.count());
        self.meta_routes.insert(node, (next, self.now_ms));
    }

    fn etcd_delay(&mut self) -> u64 {
        self.meta_rng.random_range(1..=ETCD_DELAY_MAX_MS)
    }

    /// Meta `meta` sends a keepalive (if it runs this life), and the next
    /// a third of the TTL later.
    pub(super) fn meta_keepalive(&mut self, meta: usize, life: u64) {
        if !self.meta.meta_up(meta) || self.meta.life(meta) != life {
            return;
        }
        let at_ms = self.now_ms + self.etcd_delay();
        self.schedule(
            at_ms,
            Event::EtcdKeepalive {
                meta,
                sent_ms: self.now_ms,
                life,
            },
        );
        let next_ms = self.now_ms + self.meta.ttl_ms() / 3;
        self.schedule(next_ms, Event::MetaKeepalive { meta, life });
    }

    /// etcd applies a keepalive and answers it; an election it caused is
    /// watched by every meta.
    pub(super) fn etcd_keepalive(&mut self, meta: usize, sent_ms: u64, life: u64) {
        let (leadership, elected) = self.meta.etcd_keepalive(meta, life, sent_ms, self.now_ms);
        if let Some(elected) = elected {
            self.notify_election(elected);
        }
        self.answer_campaign(meta, life, leadership);
    }

    fn answer_campaign(&mut self, meta: usize, life: u64, leadership: Leadership) {
        self.campaign_seq += 1;
        let seq = self.campaign_seq;
        let at_ms = self.now_ms + self.etcd_delay();
        self.schedule(
            at_ms,
            Event::Campaign {
                meta,
                life,
                seq,
                leadership,
            },
        );
    }

    /// etcd elected `meta` at `epoch`: every meta's watch fires.
    pub(super) fn notify_election(&mut self, (winner, epoch): (usize, i64)) {
        self.note(format!(
            "etcd: meta {winner} wins the leader key at epoch {epoch}"
        ));
        for meta in 0..self.meta.count() {
            let life = self.meta.life(meta);
            let leadership = self.meta.leadership_of(meta, life, None);
            self.answer_campaign(meta, life, leadership);
        }
    }

    /// Meta `meta`'s campaign learns `leadership` (unless a later answer
    /// came first, or the meta restarted since) and tells its gate.
    pub(super) fn campaign(&mut self, meta: usize, life: u64, seq: u64, leadership: Leadership) {
        if !self.meta.meta_up(meta)
            || self.meta.life(meta) != life
            || seq < self.campaign_seen[meta]
        {
            return;
        }
        self.campaign_seen[meta] = seq;
        if self.verbose {
            self.note(format!("meta {meta} learns {leadership:?}"));
        }
        self.meta.set_leadership(meta, leadership);
    }

    /// A fault tick's draws for the group: a meta crashes (the leader
    /// half the time), and the leader is paused past its session (half the
    /// time in the middle of an input).
    pub(super) fn meta_group_faults(&mut self) {
        let count = self.meta.count();
        let leader = self
            .meta
            .etcd_leader()
            .map(|(meta, _)| meta)
            .filter(|meta| self.meta.meta_up(*meta));
        if self.meta_rng.random_range(0..1000) < self.settings.meta_crash_per_mille {
            let up: Vec<usize> = (0..count).filter(|meta| self.meta.meta_up(*meta)).collect();
            let victim = match leader {
                Some(leader) if self.meta_rng.random_bool(0.5) => Some(leader),
                _ if up.is_empty() => None,
                _ => Some(up[self.meta_rng.random_range(0..up.len())]),
            };
            if let Some(victim) = victim {
                if Some(victim) == leader {
                    self.meta.group.leader_crashes += 1;
                }
                self.meta.crash(victim);
                self.counters.meta_crashes += 1;
                let back_ms = self.now_ms + self.meta_rng.random_range(100..=1_500);
                self.note(format!("meta {victim} crashes until {back_ms} ms"));
                self.schedule(back_ms, Event::MetaRestart { meta: victim });
            }
        }
        if self.meta_rng.random_range(0..1000) < self.settings.meta_pause_per_mille {
            let running =
                leader.filter(|meta| self.meta.paused_until(*meta, self.now_ms).is_none());
            if let Some(meta) = running {
                let until_ms =
                    self.now_ms + self.meta.ttl_ms() + self.meta_rng.random_range(0..=1_000);
                let mid_input = self.meta_rng.random_bool(0.5);
                self.meta.pause(meta, self.now_ms, until_ms, mid_input);
                self.last_restart_ms = self.last_restart_ms.max(until_ms);
                self.note(format!(
                    "pause meta {meta} (the leader) until {until_ms} ms{}",
                    if mid_input {
                        ", in the middle of an input"
                    } else {
                        ""
                    }
                ));
            }
        }
    }

    /// The group's invariants after every event: **one-serving-meta** and
    /// **deposed-leader-fenced** (`SimMeta::check`), and
    /// **leader-waits-out-leases**: a term that removed or replaced a
    /// member before `lease_ms + beacon_interval_ms` from its first input
    /// (at a primary's request aside) did so only to nodes whose process
    /// of the term's start has stopped since (crashed or restarted), so
    /// that no lease an earlier term granted can still be held.
    pub(super) fn check_meta_group(&mut self) -> Result<(), String> {
        self.meta.check(self.now_ms)?;
        for epoch in self.meta.take_new_terms() {
            let processes = self
                .nodes
                .values()
                .map(|node| (node.id, node.alive.then_some(node.incarnation)))
                .collect();
            self.term_nodes.insert(epoch, processes);
            self.last_restart_ms = self.last_restart_ms.max(self.now_ms);
            self.note(format!("meta term {epoch} starts"));
        }
        for change in self.meta.take_early_changes() {
            let began = &self.term_nodes[&change.epoch];
            let holding: Vec<NodeId> = change
                .nodes
                .iter()
                .copied()
                .filter(|node| {
                    let held = &self.nodes[node];
                    began.get(node).copied().flatten().is_some()
                        && held.alive
                        && began[node] == Some(held.incarnation)
                })
                .collect();
            if !holding.is_empty() {
                return Err(format!(
                    "leader-waits-out-leases: term {} (first input at {} ms) changed p{} {:?} -> {:?} at {} ms, before {} ms (lease_ms + beacon_interval_ms) passed, removing or replacing {holding:?} whose process of the term's start still runs",
                    change.epoch,
                    change.term_start_ms,
                    change.pid,
                    change.old,
                    change.new,
                    change.at_ms,
                    self.replication.lease_ms + self.replication.beacon_interval_ms,
                ));
            }
            self.early_safe += 1;
        }
        Ok(())
    }
}
