//! EventStore: a small replicated store for short-lived event-pipeline
//! state (replay ids, dedup markers, running totals), served over gRPC.
//!
//! Values live at three scopes (global, bridge, instance), are opaque bytes,
//! and expire after a TTL. Writes go through a Raft log (openraft) into a
//! RocksDB state machine; reads are linearizable; expiry is decided by
//! deadlines the leader stamps into the log.
//!
//! The crate is laid out by layer, and imports run one way, from the
//! command line and the wiring down to the store:
//! `cli` → `server` → `api` / `raft` → `store`.
//! - [`cli`]: the `eventstore` command line (serve, client, health, cluster, bench);
//! - [`server`]: running a node: wiring, routing to the leader, relaying,
//!   peer services, purging, health;
//! - [`api`]: the public gRPC service, request validation, the deadline
//!   rule and error codes; it reaches the node only through [`api::Handler`];
//! - [`raft`]: openraft's log store, network and type configuration;
//! - [`store`]: the replicated keyspace and state machine (keys, expiry, snapshots);
//! - [`client`]: the Rust client library;
//! - [`config`]: settings shared by the command line and the server;
//! - [`random`]: random identifiers (incarnations, client ids);
//! - [`tls`]: TLS on the gRPC ports (certificate files, reload, handshakes)
//!   and for clients;
//! - [`metrics`]: the Prometheus metrics every layer updates;
//! - [`proto`]: generated protobuf code (the wire contract and the peer protocol).
//!
//! The fault-injection suite and its history checker are test machinery
//! and live in their own package, `cluster/faults`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod proto;
pub mod raft;
pub mod random;
pub mod server;
pub mod store;
pub mod tls;
