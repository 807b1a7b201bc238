//! The errors a client can see, and their mapping to gRPC status codes.

use tonic::{Code, Status};

/// Message prefix of an UNAVAILABLE answer to a write that may have been
/// applied (every other UNAVAILABLE means it was not). Clients and the
/// fault suite's checker treat such a write as indeterminate.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// Metadata key on a relayed request's error that says "this node is not
/// the leader; nothing was proposed": the relaying node tries the leader
/// again. Peers read this key, never the message text.
pub const NOT_LEADER_KEY: &str = "eventstore-not-leader";

/// Metadata key on every error the `Forward` service answers with: the
/// status is the serving node's own answer, not a transport failure on the
/// way to it, so the relaying node passes it on unchanged.
pub const ANSWERED_KEY: &str = "eventstore-answered";

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
    /// This node cannot serve at all, whatever the request: it was removed
    /// from the cluster (FAILED_PRECONDITION). Nothing was applied.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A relayed request reached a node that is not the leader, which
    /// refused it before proposing anything (UNAVAILABLE, with
    /// [`NOT_LEADER_KEY`]). Only peers see it: they try the leader again.
    #[error("{0}")]
    NotLeader(String),
}

impl ApiError {
    /// The gRPC status code for this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::TooLarge(_) => Code::ResourceExhausted,
            ApiError::Unavailable(_) | ApiError::NotLeader(_) => Code::Unavailable,
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::Internal(_) => Code::Internal,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
        }
    }

    /// Rebuilds an error from a status (used when relaying a forwarded answer).
    pub fn from_status(s: &Status) -> Self {
        let msg = s.message().to_string();
        if s.metadata().contains_key(NOT_LEADER_KEY) {
            return ApiError::NotLeader(msg);
        }
        match s.code() {
            Code::InvalidArgument => ApiError::InvalidArgument(msg),
            Code::NotFound => ApiError::NotFound(msg),
            Code::ResourceExhausted => ApiError::TooLarge(msg),
            Code::Unavailable => ApiError::Unavailable(msg),
            Code::DeadlineExceeded | Code::Cancelled => ApiError::Timeout(msg),
            Code::FailedPrecondition => ApiError::FailedPrecondition(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let mut status = Status::new(e.code(), e.to_string());
        if matches!(e, ApiError::NotLeader(_)) {
            status.metadata_mut().insert(
                NOT_LEADER_KEY,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        status
    }
}

/// Whether an error, or any error that caused it, is a refused connection:
/// the request was never sent.
pub fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}
