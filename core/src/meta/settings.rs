//! Meta's replication settings and the bounds they share with its config
//! file (docs/meta.md, "Config").

/// Longest hold time a config or a drop may ask for: 10 years.
pub const HOLD_SECONDS_MAX: u64 = 10 * 365 * 24 * 3600;
/// Hard upper bound on any replica count (Pegasus's `max_allowed_replica_count`).
pub const REPLICA_COUNT_LIMIT: i32 = 5;
/// Default fewest replicas a new partition must get when replication is on
/// (capped by the table's replica count).
pub const REPLICA_COUNT_MIN_ALIVE_DEFAULT: i32 = 2;
/// Largest beacon interval, lease or grace allowed (10 minutes).
pub const REPLICATION_TIMING_MS_MAX: u64 = 600_000;
/// Default least share of the known nodes, in percent, that must be alive
/// for meta to act on silent nodes (docs/meta.md, "Frozen").
pub const ALIVE_PERCENT_MIN_DEFAULT: u8 = 50;
/// Default most balancer moves in flight at once (docs/balance.md).
pub const BALANCE_MOVES_MAX_DEFAULT: usize = 16;
/// Default most replica moves (copies) in flight touching one node.
pub const BALANCE_COPIES_PER_NODE_MAX_DEFAULT: usize = 2;
/// Default most primary switches in flight at once.
pub const BALANCE_SWITCHES_MAX_DEFAULT: usize = 2;
/// Upper bound of the balancer bounds.
pub const BALANCE_MOVES_LIMIT: usize = 4_096;
/// The cluster id of a meta whose config names none (`[meta] cluster_id`;
/// docs/duplication.md). Clusters that duplicate to each other need
/// distinct ids.
pub const CLUSTER_ID_DEFAULT: u8 = 1;

/// Meta's side of PacificA replication (present only with `replication = true`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaReplication {
    /// The nodes' beacon interval (default
    /// [`crate::replication::config::BEACON_INTERVAL_MS_DEFAULT`], 100 ms);
    /// meta ticks at half of it.
    pub beacon_interval_ms: u64,
    /// Lease in every beacon ack (default
    /// [`crate::replication::config::LEASE_MS_DEFAULT`], 600 ms).
    pub lease_ms: u64,
    /// Silence after which a node is dead (default
    /// [`crate::replication::config::GRACE_MS_DEFAULT`], 800 ms); replaces
    /// `node_timeout_ms`.
    pub grace_ms: u64,
    /// Fewest replicas a new partition gets, capped by its replica count
    /// (default [`REPLICA_COUNT_MIN_ALIVE_DEFAULT`]).
    pub replica_count_min_alive: i32,
    /// While fewer than this percent of the nodes meta knows are alive, meta
    /// is *frozen*: it removes and replaces no member and adds no learner
    /// (default [`ALIVE_PERCENT_MIN_DEFAULT`]; 0 never freezes; at most
    /// 100). So many nodes falling silent at once more likely means meta
    /// lost them than that they died (**no-removal-when-frozen**).
    pub alive_percent_min: u8,
    /// Most balancer moves in flight at once (default
    /// [`BALANCE_MOVES_MAX_DEFAULT`]; 1..=[`BALANCE_MOVES_LIMIT`]).
    pub balance_moves_max: usize,
    /// Most replica moves in flight touching one node, as source or target
    /// (default [`BALANCE_COPIES_PER_NODE_MAX_DEFAULT`]; 1..=
    /// [`BALANCE_MOVES_LIMIT`]). Each copy is paced by the nodes' copy pacing.
    pub balance_copies_per_node_max: usize,
    /// Most primary switches in flight at once (default
    /// [`BALANCE_SWITCHES_MAX_DEFAULT`]; 1..=[`BALANCE_MOVES_LIMIT`]): each
    /// stops its partition's writes until the new primary serves.
    pub balance_switches_max: usize,
}

impl Default for MetaReplication {
    fn default() -> MetaReplication {
        MetaReplication {
            beacon_interval_ms: crate::replication::config::BEACON_INTERVAL_MS_DEFAULT,
            lease_ms: crate::replication::config::LEASE_MS_DEFAULT,
            grace_ms: crate::replication::config::GRACE_MS_DEFAULT,
            replica_count_min_alive: REPLICA_COUNT_MIN_ALIVE_DEFAULT,
            alive_percent_min: ALIVE_PERCENT_MIN_DEFAULT,
            balance_moves_max: BALANCE_MOVES_MAX_DEFAULT,
            balance_copies_per_node_max: BALANCE_COPIES_PER_NODE_MAX_DEFAULT,
            balance_switches_max: BALANCE_SWITCHES_MAX_DEFAULT,
        }
    }
}

impl MetaReplication {
    /// Checks grace > lease + beacon and lease > 2 x beacon (through
    /// [`crate::replication::config::ReplicationSettings::validate`]), the
    /// timing upper bound, the minimum replica count and the freeze
    /// percentage.
    pub fn validate(&self) -> Result<(), String> {
        let settings = crate::replication::config::ReplicationSettings {
            beacon_interval_ms: self.beacon_interval_ms,
            lease_ms: self.lease_ms,
            grace_ms: self.grace_ms,
            ..Default::default()
        };
        settings.validate().map_err(|error| error.to_string())?;
        if self.grace_ms > REPLICATION_TIMING_MS_MAX {
            return Err(format!(
                "grace_ms ({}) must be at most {REPLICATION_TIMING_MS_MAX}",
                self.grace_ms
            ));
        }
        if !(1..=REPLICA_COUNT_LIMIT).contains(&self.replica_count_min_alive) {
            return Err(format!(
                "replica_count_min_alive ({}) is out of range (allowed 1..={REPLICA_COUNT_LIMIT})",
                self.replica_count_min_alive
            ));
        }
        for (key, value) in [
            ("balance_moves_max", self.balance_moves_max),
            (
                "balance_copies_per_node_max",
                self.balance_copies_per_node_max,
            ),
            ("balance_switches_max", self.balance_switches_max),
        ] {
            if !(1..=BALANCE_MOVES_LIMIT).contains(&value) {
                return Err(format!(
                    "{key} ({value}) is out of range (allowed 1..={BALANCE_MOVES_LIMIT})"
                ));
            }
        }
        if self.alive_percent_min > 100 {
            return Err(format!(
                "alive_percent_min ({}) is out of range (allowed 0..=100)",
                self.alive_percent_min
            ));
        }
        Ok(())
    }
}
