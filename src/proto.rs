//! Code generated at build time from `proto/`.
//!
//! [`protob`] is the public wire contract that clients speak; [`peer`] is the
//! internal protocol between nodes (Raft messages, request forwarding and
//! cluster administration).

#![allow(missing_docs)]
#![allow(clippy::all)]

/// The public wire contract: `package protob`, `service EventStore`.
pub mod protob {
    tonic::include_proto!("protob");
}

/// The internal peer protocol's package root (`package eventstore.peer`).
pub mod eventstore {
    /// The internal peer protocol: `package eventstore.peer`.
    pub mod peer {
        tonic::include_proto!("eventstore.peer");
    }
}
pub use eventstore::peer;

/// Encoded file descriptors of both protocols, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
