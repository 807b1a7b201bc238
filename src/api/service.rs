//! The public `protob.EventStore` gRPC service: translates wire requests to
//! [`Node::handle`] calls and results back to wire responses and statuses.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::protob::event_store_server::EventStore;
use crate::proto::protob::{
    DeleteRequest, DeleteResponse, LoadRequest, LoadResponse, SaveRequest, SaveResponse,
};
use crate::server::deadline_of;
use crate::server::node::{Node, Reply, Request as NodeRequest};

/// The client-facing service of one node.
#[derive(Clone)]
pub struct EventStoreService {
    node: Arc<Node>,
}

impl EventStoreService {
    /// Serves clients through `node`.
    pub fn new(node: Arc<Node>) -> Self {
        EventStoreService { node }
    }
}

#[tonic::async_trait]
impl EventStore for EventStoreService {
    async fn save(&self, req: Request<SaveRequest>) -> Result<Response<SaveResponse>, Status> {
        let deadline = deadline_of(&req, self.node.default_timeout);
        match self
            .node
            .handle(NodeRequest::Save(req.into_inner()), deadline, false)
            .await?
        {
            Reply::Save(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("mismatched reply")),
        }
    }

    async fn load(&self, req: Request<LoadRequest>) -> Result<Response<LoadResponse>, Status> {
        let deadline = deadline_of(&req, self.node.default_timeout);
        match self
            .node
            .handle(NodeRequest::Load(req.into_inner()), deadline, false)
            .await?
        {
            Reply::Load(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("mismatched reply")),
        }
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let deadline = deadline_of(&req, self.node.default_timeout);
        match self
            .node
            .handle(NodeRequest::Delete(req.into_inner()), deadline, false)
            .await?
        {
            Reply::Delete(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("mismatched reply")),
        }
    }
}
