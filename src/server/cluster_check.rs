//! Keeping clusters apart on the peer port: a node that knows its cluster
//! id refuses any peer call from a node of another cluster.
//!
//! Raft messages carry the sender's cluster id in their envelope and are
//! checked by the `RaftPeer` service ([`crate::server::peer`]); every other
//! call (relayed client requests, admin calls between nodes) carries it as
//! the metadata [`CLUSTER_ID_KEY`], checked here by [`ClusterCheckLayer`]
//! for every call on the peer port. A call without it is let through: the
//! operator's `eventstore cluster ...` commands send none. Every answer of
//! the peer port carries this node's cluster id in the same metadata key.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::raft::network::{CLUSTER_ID_KEY, FOREIGN_CLUSTER_KEY, NODE_ID_KEY};
use crate::raft::types::NodeId;
use crate::store::cluster_id::{admits, format_id, parse_id};
use crate::store::ClusterId;

/// How often the refusal of the same cluster's messages is logged again.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Checks the cluster id of peer messages for one node, and builds and
/// logs its refusals. Cheap to clone: clones share the log's rate limit.
#[derive(Clone)]
pub struct ClusterCheck {
    node_id: NodeId,
    cluster_id: ClusterId,
    reported: Arc<Mutex<std::collections::HashMap<u64, Instant>>>,
}

impl ClusterCheck {
    /// Checks messages to node `node_id` of cluster `cluster_id`.
    pub fn new(node_id: NodeId, cluster_id: ClusterId) -> Self {
        ClusterCheck {
            node_id,
            cluster_id,
            reported: Arc::default(),
        }
    }

    /// This node's cluster id.
    pub fn cluster_id(&self) -> &ClusterId {
        &self.cluster_id
    }

    /// Admits a message from node `sender` (if known) at `remote` (if
    /// known) of cluster `theirs` (0: the sender knows none), or refuses it
    /// with FAILED_PRECONDITION naming both clusters and what to do.
    pub fn check(
        &self,
        theirs: u64,
        sender: Option<NodeId>,
        remote: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let ours = self.cluster_id.get();
        if admits(ours, theirs) {
            return Ok(());
        }
        let ours = ours.map(format_id).unwrap_or_default();
        crate::metrics::CLUSTER_ID_MISMATCHES
            .with_label_values(&["incoming"])
            .inc();
        let who = match sender {
            Some(id) => format!("node {id}"),
            None => "a node".to_string(),
        };
        let at = remote.map(|a| format!(" at {a}")).unwrap_or_default();
        let msg = format!(
            "{who}{at} belongs to cluster {}, this node (node {}) to cluster {ours}: a reused \
             address or a data directory from another cluster? A node takes part only in the \
             cluster its data directory belongs to: check --peers on both nodes and which data \
             directory each runs on (README: Cluster identity)",
            format_id(theirs),
            self.node_id,
        );
        if self.due(theirs) {
            tracing::warn!(
                their_cluster = %format_id(theirs),
                our_cluster = %ours,
                "refusing peer messages: {msg} (logged once per cluster, then at most every {}s)",
                REPORT_EVERY.as_secs()
            );
        }
        let mut status = Status::failed_precondition(msg);
        status
            .metadata_mut()
            .insert(FOREIGN_CLUSTER_KEY, MetadataValue::from_static("1"));
        if let Ok(v) = ours.parse() {
            status.metadata_mut().insert(CLUSTER_ID_KEY, v);
        }
        Err(status)
    }

    /// Whether to log a refusal of cluster `theirs` now.
    fn due(&self, theirs: u64) -> bool {
        let mut map = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&theirs) {
            Some(at) if at.elapsed() < REPORT_EVERY => false,
            _ => {
                map.insert(theirs, Instant::now());
                true
            }
        }
    }

    /// Checks a call by its metadata (see the module's documentation).
    fn check_headers(
        &self,
        headers: &http::HeaderMap,
        remote: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let Some(value) = headers.get(CLUSTER_ID_KEY) else {
            return Ok(());
        };
        let theirs = value.to_str().ok().and_then(parse_id).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{CLUSTER_ID_KEY} must be a cluster id of 1 to 16 hex digits, not {value:?}"
            ))
        })?;
        let sender = headers
            .get(NODE_ID_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        self.check(theirs, sender, remote)
    }
}

/// A tower layer for the peer port that applies [`ClusterCheck`] to the
/// metadata of every call, and names this node's cluster in every answer.
#[derive(Clone)]
pub struct ClusterCheckLayer {
    check: ClusterCheck,
}

impl ClusterCheckLayer {
    /// Checks calls to node `node_id` of cluster `cluster_id`.
    pub fn new(node_id: NodeId, cluster_id: ClusterId) -> Self {
        ClusterCheckLayer {
            check: ClusterCheck::new(node_id, cluster_id),
        }
    }
}

impl<S> tower::Layer<S> for ClusterCheckLayer {
    type Service = ClusterChecked<S>;

    fn layer(&self, inner: S) -> ClusterChecked<S> {
        ClusterChecked {
            inner,
            check: self.check.clone(),
        }
    }
}

/// A service behind a [`ClusterCheckLayer`].
#[derive(Clone)]
pub struct ClusterChecked<S> {
    inner: S,
    check: ClusterCheck,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ClusterChecked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let remote = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        let ours = self
            .check
            .cluster_id()
            .get()
            .and_then(|id| http::HeaderValue::from_str(&format_id(id)).ok());
        let mut answer: Self::Future = match self.check.check_headers(req.headers(), remote) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        if let Some(ours) = ours {
            answer = Box::pin(async move {
                let mut resp = answer.await?;
                resp.headers_mut().entry(CLUSTER_ID_KEY).or_insert(ours);
                Ok(resp)
            });
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_message_naming_another_cluster_is_refused_with_both_ids() {
        let ours = ClusterId::default();
        ours.adopt(0xaaaa).unwrap();
        let check = ClusterCheck::new(1, ours);
        let remote: SocketAddr = "10.0.0.7:4567".parse().unwrap();
        // Its own cluster, or a sender that knows none: admitted.
        assert!(check.check(0xaaaa, Some(0), Some(remote)).is_ok());
        assert!(check.check(0, Some(0), Some(remote)).is_ok());
        let st = check.check(0xbbbb, Some(0), Some(remote)).unwrap_err();
        assert_eq!(st.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            st.message().split('?').next().unwrap(),
            "node 0 at 10.0.0.7:4567 belongs to cluster 000000000000bbbb, this node (node 1) to \
             cluster 000000000000aaaa: a reused address or a data directory from another cluster"
        );
        assert!(st.metadata().contains_key(FOREIGN_CLUSTER_KEY));
        assert_eq!(
            st.metadata().get(CLUSTER_ID_KEY).unwrap(),
            "000000000000aaaa"
        );
    }

    #[test]
    fn a_node_that_knows_no_id_admits_every_message() {
        let check = ClusterCheck::new(1, ClusterId::default());
        assert!(check.check(0xbbbb, Some(0), None).is_ok());
    }

    #[test]
    fn metadata_is_checked_when_present_and_must_be_an_id() {
        let ours = ClusterId::default();
        ours.adopt(0xaaaa).unwrap();
        let check = ClusterCheck::new(1, ours);
        // The operator's commands send none.
        assert!(check.check_headers(&headers(&[]), None).is_ok());
        assert!(check
            .check_headers(&headers(&[(CLUSTER_ID_KEY, "000000000000aaaa")]), None)
            .is_ok());
        let st = check
            .check_headers(
                &headers(&[(CLUSTER_ID_KEY, "bbbb"), (NODE_ID_KEY, "2")]),
                None,
            )
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::FailedPrecondition);
        assert!(
            st.message()
                .starts_with("node 2 belongs to cluster 000000000000bbbb"),
            "{st:?}"
        );
        let st = check
            .check_headers(&headers(&[(CLUSTER_ID_KEY, "not-an-id")]), None)
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
    }
}
