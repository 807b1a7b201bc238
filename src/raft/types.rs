//! The openraft types as the Raft plumbing and the server use them: the
//! type configuration declared with the store's commands
//! ([`crate::store::types`]), and the Raft handle over the store's state
//! machine.

pub use crate::store::types::{
    Entry, LogId, Node, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

/// The Raft handle specialised to EventStore's state machine.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
