//! The narrow interface between the gRPC API and whatever serves requests:
//! a client request in wire form, its answer, and the [`Handler`] trait that
//! the server's node implements. The API depends on this trait only, so the
//! dependency runs one way: the server wires the API up, never the reverse.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::ApiError;
use crate::proto::protob::{
    DeleteRequest, DeleteResponse, LoadRequest, LoadResponse, SaveRequest, SaveResponse,
};

/// A client request in wire form, kept so it can be relayed unchanged.
#[derive(Clone, Debug)]
pub enum Request {
    /// A Save.
    Save(SaveRequest),
    /// A Load.
    Load(LoadRequest),
    /// A Delete.
    Delete(DeleteRequest),
}

impl Request {
    /// The method's name, as logs and metrics label it.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Save(_) => "save",
            Request::Load(_) => "load",
            Request::Delete(_) => "delete",
        }
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer to a Save.
    Save(SaveResponse),
    /// Answer to a Load.
    Load(LoadResponse),
    /// Answer to a Delete.
    Delete(DeleteResponse),
}

/// Serves client requests for the gRPC service.
pub trait Handler: Send + Sync + 'static {
    /// Serves `req` by `deadline`. `request_id` is the client's request id
    /// (see [`crate::api::request_id`]), already checked. `relayed` is true
    /// when another node relayed it here: then it is served only if this
    /// node is the leader.
    fn handle(
        &self,
        req: Request,
        request_id: Option<String>,
        deadline: Instant,
        relayed: bool,
    ) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// The deadline of a request that carries no `grpc-timeout`.
    fn default_timeout(&self) -> Duration;
}
