//! A minimal, deterministic etcd for the simulated meta group
//! (docs/meta-ha.md, "In the simulator"): one session (lease) per meta, kept alive by
//! its keepalives, and one leader key held by one session. The key's
//! creation revision is the term's epoch. A session ends in etcd at the
//! time etcd last renewed it plus the TTL; the leader key goes with it, and
//! another meta with a live session wins it at a strictly higher revision.

use markab_core::meta::leader::{session_until_ms, Leadership};

#[derive(Clone, Copy, Debug)]
struct Session {
    /// The life of the meta process that opened it: a restarted meta
    /// opens a new session (its old one lives on, unrenewed, until it
    /// ends; until then the new one waits).
    life: u64,
    /// When etcd ends the session unless renewed (etcd's clock: the
    /// world's).
    expires_ms: u64,
    /// The send time (the meta's clock) of the latest keepalive etcd
    /// applied.
    sent_ms: u64,
}

#[derive(Debug)]
pub struct Etcd {
    pub ttl_ms: u64,
    revision: i64,
    sessions: Vec<Option<Session>>,
    leader: Option<(usize, i64)>,
    /// The last holder: an election takes the next live session after it
    /// (as the queue of campaigners turns).
    last_holder: usize,
}

impl Etcd {
    /// `metas` sessions opened at `now_ms`; meta 0 wins the leader key.
    pub fn new(metas: usize, ttl_ms: u64, now_ms: u64) -> Etcd {
        let session = Session {
            life: 0,
            expires_ms: now_ms + ttl_ms,
            sent_ms: now_ms,
        };
        let mut etcd = Etcd {
            ttl_ms,
            revision: 0,
            sessions: vec![Some(session); metas],
            leader: None,
            last_holder: metas - 1,
        };
        etcd.expire(now_ms);
        etcd
    }

    /// The holder of the leader key and its epoch.
    pub fn leader(&self) -> Option<(usize, i64)> {
        self.leader
    }

    /// A keepalive that life `life` of `meta` sent at `sent_ms` (its
    /// clock) reaches etcd at `now_ms`: it renews that life's session, or
    /// opens a new one when the meta has none (it campaigns again); an
    /// earlier life's session is left to end. The new leader, if an
    /// election happened.
    pub fn keepalive(
        &mut self,
        meta: usize,
        life: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Option<(usize, i64)> {
        let elected = self.expire(now_ms);
        let expires_ms = now_ms + self.ttl_ms;
        match &mut self.sessions[meta] {
            Some(session) if session.life == life => {
                session.expires_ms = expires_ms;
                session.sent_ms = session.sent_ms.max(sent_ms);
            }
            Some(_) => {}
            none => {
                *none = Some(Session {
                    life,
                    expires_ms,
                    sent_ms,
                })
            }
        }
        elected.or_else(|| self.expire(now_ms))
    }

    /// Ends every session whose time is up (the leader key with its
    /// holder's) and, when the key is free, elects the next live session at
    /// a higher revision: the new leader, if one was elected.
    pub fn expire(&mut self, now_ms: u64) -> Option<(usize, i64)> {
        for session in &mut self.sessions {
            if session.is_some_and(|held| held.expires_ms <= now_ms) {
                *session = None;
            }
        }
        if let Some((holder, _)) = self.leader {
            if self.sessions[holder].is_none() {
                self.leader = None;
            }
        }
        if self.leader.is_some() {
            return None;
        }
        let count = self.sessions.len();
        let winner = (1..=count)
            .map(|step| (self.last_holder + step) % count)
            .find(|meta| self.sessions[*meta].is_some())?;
        self.revision += 1;
        self.leader = Some((winner, self.revision));
        self.last_holder = winner;
        Some((winner, self.revision))
    }

    /// What life `life` of `meta`'s campaign learns now, as its answer to
    /// a keepalive it sent at `sent_ms` (or, with `None`, from the
    /// election's watch): leader until its session's local end, or
    /// follower of the holder (of none when the holder is its own earlier
    /// life's session).
    pub fn leadership(
        &self,
        meta: usize,
        life: u64,
        sent_ms: Option<u64>,
        addresses: &[String],
    ) -> Leadership {
        match self.leader {
            Some((holder, epoch)) if holder == meta => {
                let session = self.sessions[meta].expect("the holder has a session");
                if session.life != life {
                    return Leadership::Follower { leader: None };
                }
                let sent_ms = sent_ms.unwrap_or(session.sent_ms).min(session.sent_ms);
                Leadership::Leader {
                    epoch,
                    until_ms: session_until_ms(sent_ms, self.ttl_ms),
                }
            }
            Some((holder, _)) => Leadership::Follower {
                leader: Some(addresses[holder].clone()),
            },
            None => Leadership::Follower { leader: None },
        }
    }
}
