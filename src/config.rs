//! Settings a node runs with: limits on what clients may store, the default
//! TTL of each scope, and Raft timing. The CLI fills them from flags and
//! environment variables; tests build them directly.

use std::time::Duration;

/// Size limits on client input. Anything larger is rejected with
/// INVALID_ARGUMENT (key, bridge, instance) or RESOURCE_EXHAUSTED (value).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest bridge name, in bytes.
    pub max_bridge_bytes: usize,
    /// Longest instance id, in bytes.
    pub max_instance_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_bridge_bytes: 256,
            max_instance_bytes: 256,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// The TTL applied when a Save asks for `ttl = 0`, per scope, in seconds.
/// A default of 0 means "never expires" for that scope.
#[derive(Clone, Debug)]
pub struct DefaultTtls {
    /// Default for Global keys.
    pub global_secs: u64,
    /// Default for Bridge keys.
    pub bridge_secs: u64,
    /// Default for Instance keys.
    pub instance_secs: u64,
}

impl Default for DefaultTtls {
    fn default() -> Self {
        DefaultTtls {
            global_secs: 24 * 3600,
            bridge_secs: 3600,
            instance_secs: 600,
        }
    }
}

/// Raft timing and log-compaction settings.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (so slow followers can
    /// catch up without a snapshot).
    pub keep_behind_snapshot: u64,
    /// A snapshot transfer that makes no progress for this long is
    /// abandoned (and retried); a transfer as a whole has no time limit.
    pub snapshot_stall_timeout: Duration,
    /// Upper bound on the rate at which a leader sends a snapshot, in bytes
    /// per second (None: as fast as the network takes it).
    pub snapshot_send_rate: Option<u64>,
}

impl Default for RaftSettings {
    /// Timeouts for a LAN: a follower that hears nothing for the leader
    /// lease (the maximum election timeout, 600 ms) plus its own election
    /// timeout (400-600 ms) campaigns, so a dead leader is replaced about
    /// 1-1.3 s after its last heartbeat, while a leader stalled for less
    /// than a second loses nothing. Heartbeats every 100 ms keep the
    /// leader's read lease (80 % of 600 ms) fresh without a round trip.
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(600),
            snapshot_every: 10_000,
            keep_behind_snapshot: 1_000,
            snapshot_stall_timeout: Duration::from_secs(30),
            snapshot_send_rate: None,
        }
    }
}

/// Expiry settings.
#[derive(Clone, Debug)]
pub struct ExpirySettings {
    /// How often the leader looks for expired values to purge.
    pub purge_interval: Duration,
    /// The most values one purge entry removes.
    pub purge_batch: u32,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        ExpirySettings {
            purge_interval: Duration::from_secs(1),
            purge_batch: 1000,
        }
    }
}
