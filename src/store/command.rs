//! The entries EventStore writes to its Raft log, and what applying each one
//! returns.
//!
//! Commands are plain data: the leader builds them (stamping the time), Raft
//! replicates them, and every replica's state machine applies them in log
//! order with the same result. Nothing here reads a clock.
//!
//! The encoding is bincode of these types; it changed when stamps and
//! request ids were added, and a log written by an older build cannot be
//! read by this one (there is no compatibility promise yet).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How far a stamp may move the replicated clock past the time its
/// leader's monotonic clock predicts (and how far it may lag it): 1 s.
pub const MAX_CLOCK_SKEW_MS: u64 = 1000;

/// The time a leader put on an entry.
///
/// The entry's time is [`Stamp::time_ms`]: the leader's wall clock, kept
/// within [`MAX_CLOCK_SKEW_MS`] of `timeline_ms`, the cluster time that the
/// leader predicts from its monotonic clock (the replicated clock it last
/// saw move, plus the monotonic time elapsed since). A wall clock that was
/// stepped a day ahead (NTP, a VM resumed) therefore moves the replicated
/// clock by at most the elapsed time plus a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The leader's wall clock, ms since the Unix epoch.
    pub wall_ms: u64,
    /// The cluster time the leader's monotonic clock predicts, ms since the
    /// Unix epoch; `None` when the leader has seen no replicated clock move
    /// since it started (then its wall clock is taken as it is).
    pub timeline_ms: Option<u64>,
    /// The node that stamped the entry.
    pub node: u64,
}

impl Stamp {
    /// A stamp that is just a wall-clock reading (no timeline), by node 0.
    pub fn wall(wall_ms: u64) -> Stamp {
        Stamp {
            wall_ms,
            timeline_ms: None,
            node: 0,
        }
    }

    /// The entry's time: the wall clock, clamped to the timeline ±
    /// [`MAX_CLOCK_SKEW_MS`].
    pub fn time_ms(&self) -> u64 {
        match self.timeline_ms {
            None => self.wall_ms,
            Some(t) => self.wall_ms.clamp(
                t.saturating_sub(MAX_CLOCK_SKEW_MS),
                t.saturating_add(MAX_CLOCK_SKEW_MS),
            ),
        }
    }

    /// How far the wall clock is from the timeline (positive: ahead), if
    /// there is a timeline.
    pub fn skew_ms(&self) -> Option<i64> {
        self.timeline_ms.map(|t| self.wall_ms as i64 - t as i64)
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timeline_ms {
            Some(t) => write!(
                f,
                "{}@n{} (wall {}, timeline {t})",
                self.time_ms(),
                self.node,
                self.wall_ms
            ),
            None => write!(f, "{}@n{} (wall)", self.wall_ms, self.node),
        }
    }
}

/// A state-machine command, as stored in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store `value` under `key` until `ttl_ms` after the write's time.
    ///
    /// The write's time is `max(stamp.time_ms(), replicated clock)`, so
    /// deadlines never move backwards even if a new leader's clock lags.
    Save {
        /// Encoded [`Location`](crate::store::Location).
        key: Vec<u8>,
        /// Opaque value bytes.
        value: Vec<u8>,
        /// Time to live in milliseconds (already resolved from the scope default).
        ttl_ms: u64,
        /// When the leader accepted the write.
        stamp: Stamp,
        /// The client's request id, if it sent one: a later entry with the
        /// same id is answered with this entry's result and not applied.
        request: Option<String>,
    },
    /// Remove `key` if present.
    Delete {
        /// Encoded [`Location`](crate::store::Location).
        key: Vec<u8>,
        /// When the leader accepted the write.
        stamp: Stamp,
        /// The client's request id, as in [`Command::Save`].
        request: Option<String>,
    },
    /// Record the incarnation (data-directory identity) of a cluster
    /// member, so that a member that later comes back with a wiped data
    /// directory is recognised and refused instead of silently rejoining.
    Register {
        /// The member's node id.
        node: u64,
        /// The incarnation the member reported.
        incarnation: u64,
    },
    /// Drop the incarnation on record for a member that was removed from
    /// the cluster, so that the id can be given to a new, empty node.
    ///
    /// No longer proposed: applying a membership change now forgets the
    /// members it drops. Kept so that logs holding such entries still apply.
    Forget {
        /// The removed member's node id.
        node: u64,
    },
    /// Remove up to `limit` values whose deadline is at or before
    /// `max(stamp.time_ms(), replicated clock)`, oldest deadline first, and
    /// up to `limit` expired request-id records. It also moves the
    /// replicated clock, which is how a leader makes an expiry it reports
    /// binding on every later leader.
    Purge {
        /// When the leader proposed the purge.
        stamp: Stamp,
        /// The most values (and request-id records) one purge entry
        /// removes, so a purge never stalls writes.
        limit: u32,
    },
    // New variants go last: the position is the on-disk encoding of log
    // entries and snapshots written by earlier versions.
    /// Record the cluster's id in the replicated state. The first such
    /// entry applied wins; later ones change nothing. A node whose data
    /// directory has no cluster id yet adopts the recorded one.
    SetClusterId {
        /// The cluster id (not 0).
        id: u64,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Save {
                key,
                value,
                ttl_ms,
                stamp,
                request,
            } => write!(
                f,
                "Save(key={}B, value={}B, ttl={ttl_ms}ms, stamp={stamp}, request={request:?})",
                key.len(),
                value.len()
            ),
            Command::Delete {
                key,
                stamp,
                request,
            } => write!(
                f,
                "Delete(key={}B, stamp={stamp}, request={request:?})",
                key.len()
            ),
            Command::Purge { stamp, limit } => write!(f, "Purge(stamp={stamp}, limit={limit})"),
            Command::Register { node, incarnation } => {
                write!(f, "Register(node={node}, incarnation={incarnation:x})")
            }
            Command::Forget { node } => write!(f, "Forget(node={node})"),
            Command::SetClusterId { id } => write!(f, "SetClusterId({id:016x})"),
        }
    }
}

/// The result of applying one log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry: nothing to report.
    #[default]
    Nothing,
    /// The value was stored and expires at `deadline_ms`.
    Saved {
        /// Absolute deadline, ms since the Unix epoch.
        deadline_ms: u64,
    },
    /// The key was removed (`existed` tells whether there was a value).
    Deleted {
        /// Whether a value was present.
        existed: bool,
    },
    /// A member's incarnation was recorded (`false`: one was already on record).
    Registered {
        /// Whether this entry recorded it.
        recorded: bool,
    },
    /// A member's incarnation was dropped (`existed`: one was on record).
    Forgotten {
        /// Whether a record existed.
        existed: bool,
    },
    /// `count` expired values and `sessions` expired request-id records
    /// were removed.
    Purged {
        /// How many values the purge removed.
        count: u32,
        /// How many request-id records the purge removed.
        sessions: u32,
    },
    // New variants go last, as in `Command`.
    /// The cluster id was recorded (`false`: one was already on record).
    ClusterId {
        /// Whether this entry recorded it.
        recorded: bool,
    },
}

impl Command {
    /// The stamp the entry carries, if it is one that moves the clock.
    pub fn stamp(&self) -> Option<&Stamp> {
        match self {
            Command::Save { stamp, .. }
            | Command::Delete { stamp, .. }
            | Command::Purge { stamp, .. } => Some(stamp),
            Command::Register { .. } | Command::Forget { .. } | Command::SetClusterId { .. } => {
                None
            }
        }
    }
}
