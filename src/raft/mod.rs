//! Raft plumbing, kept apart from what is replicated:
//!
//! - [`types`]: the openraft types (declared with the store's commands in
//!   [`crate::store::types`]) and the Raft handle;
//! - [`log_store`]: the durable Raft log on RocksDB;
//! - [`network`]: outgoing peer RPCs over gRPC, with pooled channels.
//!
//! The state machine lives in [`crate::store`]; the incoming peer RPCs are
//! served by the server's peer service. The store never imports this module.

pub mod log_store;
pub mod network;
pub mod types;
