//! The client API: the `protob.EventStore` gRPC service, request
//! validation, and the mapping of failures to gRPC status codes.

pub mod error;
pub mod request;
pub mod service;

pub use error::ApiError;
pub use request::Op;
