//! The public `protob.EventStore` gRPC service: translates wire requests to
//! [`Handler::handle`] calls and results back to wire responses and statuses.
//!
//! The same type also serves the peer port's `Forward` service, through
//! which followers relay client requests to the leader; relayed requests are
//! served only by the leader and never relayed again.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::admission::Admission;
use super::deadline::{deadline_after, timeout_of, too_late};
use super::error::ANSWERED_KEY;
use super::handler::{Handler, Reply, Request as NodeRequest};
use super::request_id::request_id_of;
use crate::metrics;
use crate::proto::peer::forward_server::Forward;
use crate::proto::peer::{ReadIndexRequest, ReadIndexResponse};
use crate::proto::protob::event_store_server::EventStore;
use crate::proto::protob::{
    DeleteRequest, DeleteResponse, LoadRequest, LoadResponse, SaveRequest, SaveResponse,
};

/// Client requests served by one node: directly from clients, or relayed
/// by a follower.
pub struct EventStoreService<H> {
    node: Arc<H>,
    admission: Arc<Admission>,
    relayed: bool,
}

impl<H> Clone for EventStoreService<H> {
    fn clone(&self) -> Self {
        EventStoreService {
            node: self.node.clone(),
            admission: self.admission.clone(),
            relayed: self.relayed,
        }
    }
}

impl<H: Handler> EventStoreService<H> {
    /// Serves clients through `node`, relaying to the leader as needed,
    /// within the node's `admission` budgets.
    pub fn new(node: Arc<H>, admission: Arc<Admission>) -> Self {
        EventStoreService {
            node,
            admission,
            relayed: false,
        }
    }

    /// Serves requests that followers relayed to this node.
    pub fn relayed(node: Arc<H>, admission: Arc<Admission>) -> Self {
        EventStoreService {
            node,
            admission,
            relayed: true,
        }
    }

    /// Serves one request and counts it (by method, status code and
    /// origin) in the node's metrics.
    async fn serve<T: prost::Message, R: FromReply>(
        &self,
        method: &'static str,
        req: Request<T>,
        wrap: fn(T) -> NodeRequest,
    ) -> Result<Response<R>, Status> {
        let via = if self.relayed { "relay" } else { "client" };
        counted(method, via, async {
            match self.admission.admit_bytes(req.get_ref().encoded_len()) {
                Ok(_held) => self.answer(req, wrap).await,
                Err(status) => Err(self.mark_answered(status)),
            }
        })
        .await
    }

    async fn answer<T, R: FromReply>(
        &self,
        req: Request<T>,
        wrap: fn(T) -> NodeRequest,
    ) -> Result<Response<R>, Status> {
        let timeout = timeout_of(&req, self.node.default_timeout());
        let deadline = deadline_after(timeout);
        let reply = async {
            if let Some(refusal) = too_late(timeout) {
                return Err(refusal);
            }
            let request_id = request_id_of(req.metadata())?;
            self.node
                .handle(wrap(req.into_inner()), request_id, deadline, self.relayed)
                .await
        }
        .await
        .map_err(|e| self.mark_answered(Status::from(e)))?;
        R::from_reply(reply)
            .map(Response::new)
            .ok_or_else(|| Status::internal("the node answered with a reply of another kind"))
    }
}

impl<H> EventStoreService<H> {
    /// On a relayed request, marks `status` as this node's answer, so the
    /// relaying node does not take it for a failure of the connection.
    fn mark_answered(&self, mut status: Status) -> Status {
        if self.relayed {
            status
                .metadata_mut()
                .insert(ANSWERED_KEY, MetadataValue::from_static("1"));
        }
        status
    }
}

/// Runs `answer` and counts it in the node's metrics: its duration, and
/// the answer by method, status code and origin (`via`).
async fn counted<R>(
    method: &'static str,
    via: &'static str,
    answer: impl std::future::Future<Output = Result<R, Status>>,
) -> Result<R, Status> {
    let timer = metrics::REQUEST_SECONDS
        .with_label_values(&[method, via])
        .start_timer();
    let answer = answer.await;
    timer.observe_duration();
    let code = answer.as_ref().err().map_or(tonic::Code::Ok, |s| s.code());
    metrics::REQUESTS
        .with_label_values(&[method, metrics::code_label(code), via])
        .inc();
    answer
}

/// Picks the wire response out of a [`Reply`].
trait FromReply: Sized {
    fn from_reply(reply: Reply) -> Option<Self>;
}

impl FromReply for SaveResponse {
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Save(r) => Some(r),
            _ => None,
        }
    }
}

impl FromReply for LoadResponse {
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Load(r) => Some(r),
            _ => None,
        }
    }
}

impl FromReply for DeleteResponse {
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Delete(r) => Some(r),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl<H: Handler> EventStore for EventStoreService<H> {
    async fn save(&self, req: Request<SaveRequest>) -> Result<Response<SaveResponse>, Status> {
        self.serve("save", req, NodeRequest::Save).await
    }

    async fn load(&self, req: Request<LoadRequest>) -> Result<Response<LoadResponse>, Status> {
        self.serve("load", req, NodeRequest::Load).await
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.serve("delete", req, NodeRequest::Delete).await
    }
}

#[tonic::async_trait]
impl<H: Handler> Forward for EventStoreService<H> {
    async fn save(&self, req: Request<SaveRequest>) -> Result<Response<SaveResponse>, Status> {
        self.serve("save", req, NodeRequest::Save).await
    }

    async fn load(&self, req: Request<LoadRequest>) -> Result<Response<LoadResponse>, Status> {
        self.serve("load", req, NodeRequest::Load).await
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.serve("delete", req, NodeRequest::Delete).await
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let timeout = timeout_of(&req, self.node.default_timeout());
        counted("read_index", "relay", async {
            self.node
                .read_index(deadline_after(timeout))
                .await
                .map(|r| {
                    Response::new(ReadIndexResponse {
                        index: r.index,
                        cluster_time_ms: r.cluster_time_ms,
                    })
                })
                .map_err(|e| self.mark_answered(Status::from(e)))
        })
        .await
    }
}
