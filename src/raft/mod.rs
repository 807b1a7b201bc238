//! Raft plumbing, kept apart from what is replicated:
//!
//! - [`types`]: the openraft type configuration;
//! - [`log_store`]: the durable Raft log on RocksDB;
//! - [`network`]: outgoing peer RPCs over gRPC, with pooled channels.
//!
//! The state machine lives in [`crate::store`]; the incoming peer RPCs in
//! [`crate::server::peer`].

pub mod log_store;
pub mod network;
pub mod types;
