//! Forming the cluster on a node's very first start.
//!
//! Only the lowest id in `--peers` ever initializes a cluster, and only when
//! its own data directory is empty and every other listed peer has answered
//! that it holds no Raft log. A peer that does not answer, answers late or
//! answers with an error is *unknown*: the node waits and asks again, and
//! never initializes on that basis, so a slow or unreachable peer can never
//! lead to a second cluster. When any peer holds a log, a cluster exists and
//! this node lost its data (or is a new machine under an old id): it
//! initializes nothing and waits to be added like any other node (README:
//! Replacing a node). Every other node waits to be contacted.
//!
//! The initializing node also chooses the cluster's id, and keeps it in its
//! data directory before it initializes anything (see
//! [`crate::store::cluster_id`]); the registrar then records it in the
//! replicated state.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ServeConfig;
use crate::proto::peer::admin_client::AdminClient;
use crate::proto::peer::StatusRequest;
use crate::raft::network::{describe_peer_error, Channels};
use crate::raft::types::{Node as RaftNode, NodeId, Raft};
use crate::store::cluster_id::format_id;
use crate::store::ClusterId;

/// How long one peer may take to say whether it holds a log.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of asking.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often a node still waiting for answers says so in its log (and
/// whenever the set of peers it waits for changes).
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What the peers said about their logs.
enum Peers {
    /// Every peer answered that it holds no log.
    AllEmpty,
    /// This peer holds a log up to this index: a cluster exists.
    HoldsLog(NodeId, String, u64),
    /// Some peers did not answer (which, and why); none holds a log.
    Unknown(Vec<(NodeId, String)>),
}

/// Runs once at start-up, until the cluster is formed, this node is found
/// to belong to an existing one, or `stop` turns true.
pub async fn run(
    raft: Raft,
    cluster_id: ClusterId,
    cfg: ServeConfig,
    had_state: bool,
    own_addr: String,
    channels: Channels,
    mut stop: watch::Receiver<bool>,
) {
    if had_state {
        tracing::info!("existing Raft state found; rejoining");
        return;
    }
    let lowest = cfg.peers.keys().next().copied();
    if lowest != Some(cfg.node_id) {
        tracing::info!(
            bootstrapper = ?lowest,
            "empty data directory; waiting for the cluster to contact this node"
        );
        return;
    }
    let others: Vec<(NodeId, String)> = cfg
        .peers
        .iter()
        .filter(|(id, _)| **id != cfg.node_id)
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    let mut reported: Option<Instant> = None;
    let mut reported_ids: Vec<NodeId> = Vec::new();
    loop {
        if joined(&raft) {
            tracing::info!("this node was added to the cluster");
            return;
        }
        match ask(&channels, &others).await {
            Peers::AllEmpty => {
                initialize(&raft, &cluster_id, &cfg, &own_addr).await;
                return;
            }
            Peers::HoldsLog(id, addr, last) => {
                tracing::warn!(
                    "this node's data directory is empty, but peer {id} ({addr}) holds a Raft \
                     log up to index {last}: a cluster exists and this node lost its data (or \
                     replaces a lost node, or joins). It will not initialize another cluster; \
                     it waits to be added. {} (README: Replacing a node).",
                    super::peer::ID_REUSE_RULE
                );
                return;
            }
            Peers::Unknown(why) => {
                let ids: Vec<NodeId> = why.iter().map(|(id, _)| *id).collect();
                if reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) || ids != reported_ids {
                    let why: Vec<&str> = why.iter().map(|(_, w)| w.as_str()).collect();
                    tracing::info!(
                        unanswered = ?why,
                        "empty data directory; waiting for every peer in --peers to say whether \
                         it holds a Raft log before initializing a cluster"
                    );
                    reported = Some(Instant::now());
                    reported_ids = ids;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Whether this node already received a log or a membership from a leader.
fn joined(raft: &Raft) -> bool {
    let m = raft.metrics().borrow_watched().clone();
    m.last_log_index.is_some() || m.membership_config.membership().nodes().next().is_some()
}

async fn ask(channels: &Channels, peers: &[(NodeId, String)]) -> Peers {
    let answers = futures::future::join_all(
        peers
            .iter()
            .map(|(id, addr)| peer_log_index(channels, *id, addr)),
    )
    .await;
    let mut unknown = Vec::new();
    for ((id, addr), answer) in peers.iter().zip(answers) {
        match answer {
            Ok(None) => {}
            Ok(Some(last)) => return Peers::HoldsLog(*id, addr.clone(), last),
            Err(why) => unknown.push((*id, format!("{id} ({addr}): {why}"))),
        }
    }
    if unknown.is_empty() {
        Peers::AllEmpty
    } else {
        Peers::Unknown(unknown)
    }
}

/// The last log index peer `id` at `addr` reports (`None`: it holds no
/// log), or why it gave no definite answer.
async fn peer_log_index(
    channels: &Channels,
    id: NodeId,
    addr: &str,
) -> Result<Option<u64>, String> {
    let ch = channels
        .endpoint(addr)
        .map_err(|e| format!("bad address: {e}"))?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", describe_peer_error(&e)))?;
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(PROBE_TIMEOUT);
    let answer = AdminClient::new(ch)
        .log_state(req)
        .await
        .map_err(|s| format!("no answer: {:?}: {}", s.code(), describe_peer_error(&s)))?
        .into_inner();
    if answer.node_id != id {
        return Err(format!("answered as node {}", answer.node_id));
    }
    Ok(answer.last_log_index)
}

async fn initialize(raft: &Raft, cluster_id: &ClusterId, cfg: &ServeConfig, own_addr: &str) {
    let members: BTreeMap<NodeId, RaftNode> = cfg
        .peers
        .iter()
        .map(|(id, addr)| (*id, RaftNode::new(addr)))
        .collect();
    // The new cluster's id, kept before anything is initialized (a node
    // that stopped in between keeps the id it chose).
    let id = match cluster_id.get() {
        Some(id) => id,
        None => {
            let chosen = crate::random::nonzero_u64();
            if let Err(e) = cluster_id.adopt(chosen) {
                tracing::error!(error = %e, "storing the new cluster's id failed; not initializing");
                return;
            }
            chosen
        }
    };
    tracing::info!(
        ?members,
        own_addr,
        cluster_id = %format_id(id),
        "initializing a new cluster"
    );
    match raft.initialize(members).await {
        Ok(()) => {}
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(e),
        )) => tracing::info!(error = %e, "cluster already initialized"),
        Err(e) => tracing::error!(error = %e, "initializing the cluster failed"),
    }
}
