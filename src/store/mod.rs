//! Storage: the replicated keyspace and everything that turns Raft log
//! entries into it.
//!
//! - [`cluster_id`]: the id that tells one cluster's nodes from another's;
//! - [`location`]: scopes, keys and their unambiguous byte encoding;
//! - [`command`]: the log entries ([`Command`]) and their results ([`Applied`]);
//! - [`keyspace`]: values with deadlines, the expiry index and the logical clock;
//! - [`state_machine`]: openraft's state-machine trait over the keyspace;
//! - [`snapshot`]: the snapshot file format;
//! - [`db`]: the RocksDB database and its column families;
//! - [`types`]: the openraft type configuration over these commands.

pub mod cluster_id;
pub mod command;
pub mod db;
pub mod keyspace;
pub mod location;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use cluster_id::ClusterId;
pub use command::{Applied, Command, Stamp, MAX_CLOCK_SKEW_MS};
pub use keyspace::{Keyspace, KeyspaceError, SessionPolicy};
pub use location::{Location, Scope};
pub use state_machine::{ClockObserver, ClockSeen, StateMachine};
