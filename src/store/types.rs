//! The openraft type configuration: what a log entry carries ([`Command`]),
//! what applying it returns ([`Applied`]), how nodes are addressed, and the
//! aliases of openraft's generic types for it.
//!
//! It lives with the store because the log entries are the store's own
//! commands; the Raft plumbing in `crate::raft` re-exports it.

use super::{Applied, Command};

openraft::declare_raft_types!(
    /// EventStore's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Applied,
        Node = openraft::BasicNode,
);

/// A node id: 0, 1, 2... (the StatefulSet ordinal).
pub type NodeId = u64;
/// A node's peer address (`HOST:PORT` of its `--peer-listen`).
pub type Node = openraft::BasicNode;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Membership as stored with the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
