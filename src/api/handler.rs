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

    /// Asked of the leader by a follower that will serve Loads from its own
    /// state: confirms that this node leads, by `deadline`, and returns
    /// what the follower must apply first. A node that does not lead
    /// answers [`ApiError::NotLeader`].
    fn read_index(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<ReadIndex, ApiError>> + Send;

    /// The deadline of a request that carries no `grpc-timeout`.
    fn default_timeout(&self) -> Duration;
}

/// The leader's answer to a follower about to serve reads (see
/// [`Handler::read_index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadIndex {
    /// The commit index once leadership was confirmed: a follower that has
    /// applied this far holds every write acknowledged before it asked.
    pub index: u64,
    /// The leader's cluster time then, in milliseconds since the epoch.
    pub cluster_time_ms: u64,
}
