//! The client API: the `protob.EventStore` gRPC service, request
//! validation, admission (back-pressure), the request-deadline rule, and
//! the mapping of failures to gRPC status codes. It reaches the node only through [`Handler`].

pub mod admission;
pub mod codec;
pub mod content_type;
pub mod deadline;
pub mod error;
pub mod handler;
pub mod request;
pub mod request_id;
pub mod service;

pub use error::{ApiError, ANSWERED_KEY, NOT_LEADER_KEY, OUTCOME_UNKNOWN};
pub use handler::{Handler, Reply, Request};
pub use request::Op;
pub use request_id::REQUEST_ID_HEADER;
