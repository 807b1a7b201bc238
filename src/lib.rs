//! EventStore: a small replicated store for short-lived event-pipeline
//! state (replay ids, dedup markers, running totals), served over gRPC.
//!
//! Values live at three scopes (global, bridge, instance), are opaque bytes,
//! and expire after a TTL. Writes go through a Raft log (openraft) into a
//! RocksDB state machine; reads are linearizable; expiry is decided by
//! deadlines the leader stamps into the log.
//!
//! The crate is laid out by layer:
//! - [`api`]: the public gRPC service, validation and error codes;
//! - [`server`]: running a node (routing, relaying, peer services, purging);
//! - [`raft`]: openraft's log store, network and type configuration;
//! - [`store`]: the replicated keyspace and state machine;
//! - [`client`]: the Rust client library;
//! - [`check`]: history checks (linearizability, expiry, durability) for the fault-injection suite;
//! - [`faults`]: the fault-injection runner behind `eventstore-faults` and `cluster/faults.sh`;
//! - [`cli`]: the `eventstore` command line;
//! - [`proto`]: generated protobuf code.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod faults;
pub mod proto;
pub mod raft;
pub mod server;
pub mod store;
