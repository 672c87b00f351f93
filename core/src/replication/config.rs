//! Timing and window settings of PacificA replication (docs/replication.md,
//! "Timing settings"), checked once at start.

use thiserror::Error;

/// Default interval between a node's beacons to meta, in milliseconds.
pub const BEACON_INTERVAL_MS_DEFAULT: u64 = 100;
/// Default lease a beacon ack grants, in milliseconds, counted from the
/// moment the node *sent* the beacon.
pub const LEASE_MS_DEFAULT: u64 = 600;
/// Default time meta waits without a beacon before it declares a node dead,
/// in milliseconds, counted from the last beacon it *received*.
pub const GRACE_MS_DEFAULT: u64 = 800;
/// Default most mutations a primary has prepared but not committed.
pub const PREPARE_WINDOW_MAX_DEFAULT: usize = 64;
/// Hard upper bound on `prepare_window_max`.
pub const PREPARE_WINDOW_MAX_LIMIT: usize = 4_096;
/// Default time without any Prepare after which a primary whose secondaries
/// lag its commit point sends an empty write, in milliseconds.
pub const IDLE_COMMIT_PUSH_MS_DEFAULT: u64 = 20;
/// Default time after which an unacknowledged Prepare is sent again, in
/// milliseconds.
pub const PREPARE_RESEND_MS_DEFAULT: u64 = 50;
/// Default time a secondary may leave a Prepare unacknowledged before the
/// primary asks meta to remove it, in milliseconds. Longer than meta's
/// grace (800 ms), so a dead node's replicas are removed by meta's failure
/// detection first; this catches a member that beacons but does not
/// acknowledge, without removing one whose shard was briefly starved of
/// CPU (400 ms did, many times over, while a two-core machine rebalanced).
pub const PREPARE_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// Default most recently committed mutations a replica keeps in memory to
/// answer learners from (docs/replication.md, "Learning").
pub const LEARN_CACHE_MAX_DEFAULT: usize = 1_024;
/// Hard upper bound on `learn_cache_max`.
pub const LEARN_CACHE_MAX_LIMIT: usize = 65_536;
/// Default time a learner waits without progress before it sends its
/// `LearnRequest` again, in milliseconds.
pub const LEARN_RETRY_MS_DEFAULT: u64 = 500;

/// A timing relation that does not hold.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("beacon_interval_ms must be at least 1 (got 0)")]
    BeaconIntervalZero,
    #[error(
        "lease_ms ({lease_ms}) must be more than 2 x beacon_interval_ms ({beacon_interval_ms})"
    )]
    LeaseTooShort {
        lease_ms: u64,
        beacon_interval_ms: u64,
    },
    #[error(
        "grace_ms ({grace_ms}) must be more than lease_ms + beacon_interval_ms ({lease_ms} + {beacon_interval_ms}): the margin covers a read begun just before the lease ends, the clocks' rates and the beacon's trip"
    )]
    GraceTooShort {
        grace_ms: u64,
        lease_ms: u64,
        beacon_interval_ms: u64,
    },
    #[error("prepare_window_max ({got}) must be in 1..={PREPARE_WINDOW_MAX_LIMIT}")]
    WindowOutOfRange { got: usize },
    #[error("prepare_resend_ms ({resend_ms}) must be in 1..prepare_timeout_ms ({timeout_ms})")]
    ResendOutOfRange { resend_ms: u64, timeout_ms: u64 },
    #[error("idle_commit_push_ms must be at least 1 (got 0)")]
    IdlePushZero,
    #[error("learn_cache_max ({got}) must be in 1..={LEARN_CACHE_MAX_LIMIT}")]
    LearnCacheOutOfRange { got: usize },
    #[error("learn_retry_ms must be at least 1 (got 0)")]
    LearnRetryZero,
}

/// Settings of one replica and of the lease protocol around it.
///
/// Defaults ([`ReplicationSettings::default`]) aim at failover under one
/// second: beacon 100 ms, lease 600 ms, grace 800 ms, window 64, idle push
/// 20 ms, resend 50 ms, prepare timeout 400 ms, learn cache 1,024
/// mutations, learn retry 500 ms.
///
/// ```
/// use markab_core::replication::config::ReplicationSettings;
/// let settings = ReplicationSettings::default();
/// assert!(settings.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// Interval between beacons (default 100 ms).
    pub beacon_interval_ms: u64,
    /// Lease granted by a beacon ack, from the beacon's send time (default 600 ms).
    pub lease_ms: u64,
    /// Silence after which meta declares a node dead (default 800 ms).
    pub grace_ms: u64,
    /// Most uncommitted mutations at a primary (default 64).
    pub prepare_window_max: usize,
    /// Idle time before an empty write pushes the commit point (default 20 ms).
    pub idle_commit_push_ms: u64,
    /// Interval between resends of an unacknowledged Prepare (default 50 ms).
    pub prepare_resend_ms: u64,
    /// Time before an unacknowledging secondary is reported (default 400 ms).
    pub prepare_timeout_ms: u64,
    /// Committed mutations kept in memory for learners (default 1,024).
    pub learn_cache_max: usize,
    /// A learner without progress for this long asks again (default 500 ms).
    pub learn_retry_ms: u64,
}

impl Default for ReplicationSettings {
    fn default() -> ReplicationSettings {
        ReplicationSettings {
            beacon_interval_ms: BEACON_INTERVAL_MS_DEFAULT,
            lease_ms: LEASE_MS_DEFAULT,
            grace_ms: GRACE_MS_DEFAULT,
            prepare_window_max: PREPARE_WINDOW_MAX_DEFAULT,
            idle_commit_push_ms: IDLE_COMMIT_PUSH_MS_DEFAULT,
            prepare_resend_ms: PREPARE_RESEND_MS_DEFAULT,
            prepare_timeout_ms: PREPARE_TIMEOUT_MS_DEFAULT,
            learn_cache_max: LEARN_CACHE_MAX_DEFAULT,
            learn_retry_ms: LEARN_RETRY_MS_DEFAULT,
        }
    }
}

const _: () = assert!(GRACE_MS_DEFAULT > LEASE_MS_DEFAULT + BEACON_INTERVAL_MS_DEFAULT);
const _: () = assert!(LEASE_MS_DEFAULT > 2 * BEACON_INTERVAL_MS_DEFAULT);
const _: () = assert!(PREPARE_WINDOW_MAX_DEFAULT <= PREPARE_WINDOW_MAX_LIMIT);
const _: () = assert!(PREPARE_RESEND_MS_DEFAULT < PREPARE_TIMEOUT_MS_DEFAULT);
const _: () = assert!(LEARN_CACHE_MAX_DEFAULT <= LEARN_CACHE_MAX_LIMIT);

impl ReplicationSettings {
    /// Checks grace > lease + beacon, lease > 2 x beacon and the bounds of
    /// the other settings. A lease longer than the grace would let a
    /// deposed primary serve beside its successor (invariant
    /// **one-serving-primary**); the beacon interval of margin covers a read
    /// that passed its lease check just before the lease ended, the
    /// difference in rate between the node's and meta's clocks, and the
    /// beacon's trip (docs/replication.md, "Timing settings").
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.beacon_interval_ms == 0 {
            return Err(SettingsError::BeaconIntervalZero);
        }
        if self.lease_ms <= 2 * self.beacon_interval_ms {
            return Err(SettingsError::LeaseTooShort {
                lease_ms: self.lease_ms,
                beacon_interval_ms: self.beacon_interval_ms,
            });
        }
        if self.grace_ms <= self.lease_ms + self.beacon_interval_ms {
            return Err(SettingsError::GraceTooShort {
                grace_ms: self.grace_ms,
                lease_ms: self.lease_ms,
                beacon_interval_ms: self.beacon_interval_ms,
            });
        }
        if self.prepare_window_max == 0 || self.prepare_window_max > PREPARE_WINDOW_MAX_LIMIT {
            return Err(SettingsError::WindowOutOfRange {
                got: self.prepare_window_max,
            });
        }
        if self.prepare_resend_ms == 0 || self.prepare_resend_ms >= self.prepare_timeout_ms {
            return Err(SettingsError::ResendOutOfRange {
                resend_ms: self.prepare_resend_ms,
                timeout_ms: self.prepare_timeout_ms,
            });
        }
        if self.idle_commit_push_ms == 0 {
            return Err(SettingsError::IdlePushZero);
        }
        if self.learn_cache_max == 0 || self.learn_cache_max > LEARN_CACHE_MAX_LIMIT {
            return Err(SettingsError::LearnCacheOutOfRange {
                got: self.learn_cache_max,
            });
        }
        if self.learn_retry_ms == 0 {
            return Err(SettingsError::LearnRetryZero);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The defaults satisfy every relation.
    #[test]
    fn defaults_are_valid() {
        assert_eq!(ReplicationSettings::default().validate(), Ok(()));
    }

    // A grace not longer than the lease plus one beacon interval is
    // refused, naming the values: grace = lease + 1 ms, once accepted, left
    // no room for a read in flight when the lease ends.
    #[test]
    fn grace_must_exceed_lease_by_a_beacon() {
        for grace_ms in [600, 601, 700] {
            let settings = ReplicationSettings {
                grace_ms,
                ..ReplicationSettings::default()
            };
            assert_eq!(
                settings.validate(),
                Err(SettingsError::GraceTooShort {
                    grace_ms,
                    lease_ms: 600,
                    beacon_interval_ms: 100,
                })
            );
        }
        let settings = ReplicationSettings {
            grace_ms: 701,
            ..ReplicationSettings::default()
        };
        assert_eq!(settings.validate(), Ok(()));
    }

    // A lease of at most two beacon intervals is refused.
    #[test]
    fn lease_must_exceed_two_beacons() {
        let settings = ReplicationSettings {
            lease_ms: 200,
            ..ReplicationSettings::default()
        };
        assert!(matches!(
            settings.validate(),
            Err(SettingsError::LeaseTooShort { .. })
        ));
    }

    // Window, resend and idle-push bounds are enforced.
    #[test]
    fn other_bounds_are_enforced() {
        let base = ReplicationSettings::default();
        let zero_window = ReplicationSettings {
            prepare_window_max: 0,
            ..base
        };
        assert!(zero_window.validate().is_err());
        let slow_resend = ReplicationSettings {
            prepare_resend_ms: base.prepare_timeout_ms,
            ..base
        };
        assert!(slow_resend.validate().is_err());
        let zero_push = ReplicationSettings {
            idle_commit_push_ms: 0,
            ..base
        };
        assert!(zero_push.validate().is_err());
        let no_cache = ReplicationSettings {
            learn_cache_max: 0,
            ..base
        };
        assert_eq!(
            no_cache.validate(),
            Err(SettingsError::LearnCacheOutOfRange { got: 0 })
        );
        let huge_cache = ReplicationSettings {
            learn_cache_max: LEARN_CACHE_MAX_LIMIT + 1,
            ..base
        };
        assert!(huge_cache.validate().is_err());
        let no_retry = ReplicationSettings {
            learn_retry_ms: 0,
            ..base
        };
        assert_eq!(no_retry.validate(), Err(SettingsError::LearnRetryZero));
    }
}
