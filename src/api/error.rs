//! The errors a client can see, and their mapping to gRPC status codes.

use tonic::{Code, Status};

/// Message prefix of an UNAVAILABLE answer to a write that may have been
/// applied (every other UNAVAILABLE means it was not). Clients and the
/// fault suite's checker treat such a write as indeterminate.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// A failed request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a rule (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The key is absent or expired (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The value is larger than the configured limit (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    TooLarge(String),
    /// No leader, no quorum, or the node is shutting down (UNAVAILABLE).
    /// The request was not applied, unless the message starts with
    /// [`OUTCOME_UNKNOWN`].
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed while the request was in flight (DEADLINE_EXCEEDED).
    /// A write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// A storage or internal failure (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The gRPC status code for this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::TooLarge(_) => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// Rebuilds an error from a status (used when relaying a forwarded answer).
    pub fn from_status(s: &Status) -> Self {
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => ApiError::InvalidArgument(msg),
            Code::NotFound => ApiError::NotFound(msg),
            Code::ResourceExhausted => ApiError::TooLarge(msg),
            Code::Unavailable => ApiError::Unavailable(msg),
            Code::DeadlineExceeded | Code::Cancelled => ApiError::Timeout(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
