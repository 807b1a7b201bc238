//! The entries EventStore writes to its Raft log, and what applying each one
//! returns.
//!
//! Commands are plain data: the leader builds them (stamping the time), Raft
//! replicates them, and every replica's state machine applies them in log
//! order with the same result. Nothing here reads a clock.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A state-machine command, as stored in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store `value` under `key` until `ttl_ms` after the write's time.
    ///
    /// The write's time is `max(stamp_ms, highest stamp already applied)`, so
    /// deadlines never move backwards even if a new leader's clock lags.
    Save {
        /// Encoded [`Location`](crate::store::Location).
        key: Vec<u8>,
        /// Opaque value bytes.
        value: Vec<u8>,
        /// Time to live in milliseconds (already resolved from the scope default).
        ttl_ms: u64,
        /// The leader's clock when it accepted the write, ms since the Unix epoch.
        stamp_ms: u64,
    },
    /// Remove `key` if present.
    Delete {
        /// Encoded [`Location`](crate::store::Location).
        key: Vec<u8>,
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
    /// `max(now_ms, highest stamp already applied)`, oldest deadline first.
    Purge {
        /// The leader's clock when it proposed the purge, ms since the Unix epoch.
        now_ms: u64,
        /// The most values one purge entry removes, so a purge never stalls writes.
        limit: u32,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Save {
                key,
                value,
                ttl_ms,
                stamp_ms,
            } => write!(
                f,
                "Save(key={}B, value={}B, ttl={ttl_ms}ms, stamp={stamp_ms})",
                key.len(),
                value.len()
            ),
            Command::Delete { key } => write!(f, "Delete(key={}B)", key.len()),
            Command::Purge { now_ms, limit } => write!(f, "Purge(now={now_ms}, limit={limit})"),
            Command::Register { node, incarnation } => {
                write!(f, "Register(node={node}, incarnation={incarnation:x})")
            }
            Command::Forget { node } => write!(f, "Forget(node={node})"),
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
    /// `count` expired values were removed.
    Purged {
        /// How many values the purge removed.
        count: u32,
    },
}
