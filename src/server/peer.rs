//! The incoming half of the peer port: openraft's RPCs from other nodes
//! (`RaftPeer`) and cluster administration (`Admin`). Client requests that
//! followers relay (`Forward`) are served by
//! [`EventStoreService::relayed`](crate::api::service::EventStoreService::relayed).

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::ChangeMembers;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::cluster_check::ClusterCheck;
use super::node::Node;
use super::vote_guard::VoteGuard;
use crate::api::deadline::deadline_of;
use crate::proto::peer::admin_server::Admin;
use crate::proto::peer::raft_peer_server::RaftPeer;
use crate::proto::peer::{
    AddLearnerRequest, LogStateResponse, Member, MembershipResponse, NodeRequest, RaftPayload,
    SnapshotChunk, StatusRequest, StatusResponse,
};
use crate::raft::network::{decode_snapshot_header, INCARNATION_KEY, LOST_DATA_KEY, REMOVED_KEY};
use crate::raft::types::{Node as RaftNode, TypeConfig};
use crate::store::cluster_id::{format_id, Adopted};
use crate::store::snapshot::{bincode_decode, bincode_encode, incoming_path};

/// The rule for reusing a node id, as the refusal log, `cluster
/// add-learner --help` and the README state it.
pub const ID_REUSE_RULE: &str = "Reusing a node id: remove the old member with `eventstore \
     cluster remove`, then add the node back with an empty data directory, under the same id or \
     a new one (`cluster add-learner`, then `cluster promote`)";

/// Serves all three peer services for one node.
#[derive(Clone)]
pub struct PeerService {
    node: Arc<Node>,
    snapshot_dir: std::path::PathBuf,
    lost_data_reported: Arc<std::sync::atomic::AtomicBool>,
    vote_guard: VoteGuard,
    cluster: ClusterCheck,
    adopt_cluster_id: bool,
}

impl PeerService {
    /// Creates the service; received snapshots are staged in `snapshot_dir`;
    /// votes are refused while `vote_guard` holds.
    pub fn new(node: Arc<Node>, snapshot_dir: std::path::PathBuf, vote_guard: VoteGuard) -> Self {
        let cluster = ClusterCheck::new(node.id, node.cluster_id.clone());
        PeerService {
            node,
            snapshot_dir,
            lost_data_reported: Arc::default(),
            vote_guard,
            cluster,
            adopt_cluster_id: false,
        }
    }

    /// Whether this node, while it knows no cluster id, adopts the id of
    /// the first leader that replicates to it (a node that started with an
    /// empty data directory).
    pub fn adopting_cluster_id(mut self, adopt: bool) -> Self {
        self.adopt_cluster_id = adopt;
        self
    }

    /// Before this node accepts entries or a snapshot from a leader of
    /// cluster `theirs`: adopts that id, durably, if this node started
    /// empty and knows none yet. Then its acknowledgement of what it
    /// receives is never one for a cluster it does not know to belong to.
    fn adopt_leaders_cluster_id(&self, theirs: u64, leader: u64) -> Result<(), Status> {
        if !self.adopt_cluster_id || theirs == 0 || self.node.cluster_id.get().is_some() {
            return Ok(());
        }
        match self.node.cluster_id.adopt(theirs) {
            Ok(Adopted::New) => {
                tracing::info!(
                    cluster_id = %format_id(theirs),
                    leader,
                    "joined cluster {} (the cluster of leader {leader}, which first replicated \
                     to this node)",
                    format_id(theirs)
                );
                Ok(())
            }
            Ok(Adopted::Same) => Ok(()),
            // Another leader's id was adopted meanwhile.
            Ok(Adopted::Other(_)) => self.cluster.check(theirs, Some(leader), None),
            Err(e) => Err(Status::unavailable(format!(
                "node {} could not store its cluster id: {e}",
                self.node.id
            ))),
        }
    }
    /// Serves a vote or pre-vote request: refused without asking openraft
    /// while the vote guard holds (this node started less than one maximum
    /// election timeout ago), otherwise answered by `handler`.
    async fn answer_vote<F, Fut>(
        &self,
        kind: &str,
        req: Request<RaftPayload>,
        handler: F,
    ) -> Result<Response<RaftPayload>, Status>
    where
        F: FnOnce(crate::raft::types::Raft, VoteRequest<TypeConfig>) -> Fut,
        Fut: std::future::Future<
            Output = Result<VoteResponse<TypeConfig>, openraft::error::RaftError<TypeConfig>>,
        >,
    {
        let rpc: VoteRequest<TypeConfig> = self.decode(&req)?;
        self.refuse_non_member(rpc.vote.leader_id.node_id)?;
        if !self.vote_guard.refusing() {
            let resp = handler(self.node.raft.clone(), rpc).await.map_err(fatal)?;
            return self.reply(&resp);
        }
        tracing::info!(
            candidate = %rpc.vote,
            remaining = ?self.vote_guard.remaining(),
            "refusing a {kind} request: this node started less than one maximum election \
             timeout ago"
        );
        // A rejection, as openraft gives while a leader lease holds: the
        // candidate counts no grant from this node. It carries this node's
        // vote, so a candidate behind this node's term catches up.
        let vote = self.node.raft.metrics().borrow_watched().vote;
        self.reply(&VoteResponse::<TypeConfig>::new(vote, None, false))
    }

    /// Refuses messages from a node of another cluster, messages meant for
    /// another node id, and messages from a cluster that knows this node
    /// under another incarnation: then this node's data directory was lost
    /// or replaced, and rejoining as the voter it was would break Raft's
    /// safety.
    fn check_target(
        &self,
        target: u64,
        expected_incarnation: u64,
        cluster_id: u64,
        sender: u64,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<(), Status> {
        self.cluster.check(cluster_id, Some(sender), remote)?;
        if target != self.node.id {
            return Err(Status::failed_precondition(format!(
                "message for node {target} reached node {}",
                self.node.id
            )));
        }
        if expected_incarnation != 0 && expected_incarnation != self.node.incarnation {
            let msg = format!(
                "node {} was a cluster member with incarnation {expected_incarnation:x}, but its \
                 data directory is new (incarnation {:x}): its data was lost. It refuses to \
                 rejoin as the voter it was. {ID_REUSE_RULE} (README: Replacing a node).",
                self.node.id, self.node.incarnation
            );
            if !self
                .lost_data_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::error!("{msg}");
            }
            let mut status = Status::failed_precondition(msg);
            status
                .metadata_mut()
                .insert(LOST_DATA_KEY, MetadataValue::from_static("1"));
            if let Ok(v) = format!("{:x}", self.node.incarnation).parse() {
                status.metadata_mut().insert(INCARNATION_KEY, v);
            }
            return Err(status);
        }
        Ok(())
    }

    /// On the leader, refuses a vote or pre-vote request from a node that
    /// is not in the membership: it was removed (or its addition was never
    /// committed). The refusal tells it so, and it stops campaigning. Only
    /// the leader answers this way: its membership holds every committed
    /// change, while a lagging follower may not know a node added lately.
    fn refuse_non_member(&self, candidate: u64) -> Result<(), Status> {
        let m = self.node.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.node.id) {
            return Ok(());
        }
        let effective = m.membership_config.membership();
        let committed = m.committed_membership_config.membership();
        if effective.get_node(&candidate).is_some() || committed.get_node(&candidate).is_some() {
            return Ok(());
        }
        let members: Vec<u64> = effective.nodes().map(|(id, _)| *id).collect();
        let mut status = Status::failed_precondition(format!(
            "node {candidate} is not a member of the cluster (leader {}, members {members:?}): it \
             was removed",
            self.node.id
        ));
        status
            .metadata_mut()
            .insert(REMOVED_KEY, MetadataValue::from_static("1"));
        Err(status)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        req: &Request<RaftPayload>,
    ) -> Result<T, Status> {
        let p = req.get_ref();
        self.check_target(
            p.target,
            p.incarnation,
            p.cluster_id,
            p.sender,
            req.remote_addr(),
        )?;
        bincode_decode(&p.payload)
            .map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
    }

    /// Serves one unary Raft RPC: checks and decodes the request, hands it
    /// to `handler` with the Raft handle, and encodes the answer.
    async fn answer<Req, Resp, E, F, Fut>(
        &self,
        req: Request<RaftPayload>,
        handler: F,
    ) -> Result<Response<RaftPayload>, Status>
    where
        Req: serde::de::DeserializeOwned,
        Resp: serde::Serialize,
        E: std::fmt::Display,
        F: FnOnce(crate::raft::types::Raft, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        let rpc = self.decode(&req)?;
        let resp = handler(self.node.raft.clone(), rpc).await.map_err(fatal)?;
        self.reply(&resp)
    }

    fn reply<T: serde::Serialize>(&self, v: &T) -> Result<Response<RaftPayload>, Status> {
        let payload = bincode_encode(v).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftPayload {
            target: self.node.id,
            payload,
            incarnation: self.node.incarnation,
            cluster_id: self.node.cluster_id.wire(),
            sender: self.node.id,
        }))
    }
}

/// Writes a snapshot arriving in chunks to `path`, durably, and returns an
/// open handle to it.
async fn receive_snapshot(
    path: &std::path::Path,
    first: Vec<u8>,
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<std::fs::File, Status> {
    use tokio::io::AsyncWriteExt;
    let io_err = |e: std::io::Error| Status::internal(format!("staging snapshot: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
    file.write_all(&first).await.map_err(io_err)?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?.data).await.map_err(io_err)?;
    }
    file.sync_all().await.map_err(io_err)?;
    drop(file);
    std::fs::File::open(path).map_err(io_err)
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.answer_vote("vote", req, |raft, rpc| async move { raft.vote(rpc).await })
            .await
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.answer_vote("pre-vote", req, |raft, rpc| async move {
            raft.pre_vote(rpc).await
        })
        .await
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let theirs = req.get_ref().cluster_id;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = self.decode(&req)?;
        self.adopt_leaders_cluster_id(theirs, rpc.vote.leader_id.node_id)?;
        let r = self.node.raft.append_entries(rpc).await.map_err(fatal)?;
        // Anything but a refusal for a higher vote comes from the leader
        // this node follows: it is in touch with it.
        if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
            self.node.heard_from_leader();
        }
        self.reply(&r)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let remote = req.remote_addr();
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_target(
            first.target,
            first.incarnation,
            first.cluster_id,
            first.sender,
            remote,
        )?;
        let (vote, meta) = decode_snapshot_header(&first.header)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
        self.adopt_leaders_cluster_id(first.cluster_id, vote.leader_id.node_id)?;
        let path = incoming_path(&self.snapshot_dir);
        let received = receive_snapshot(&path, first.data, &mut stream).await;
        // The open handle keeps the data readable; the name is not needed,
        // and a transfer that failed half-way leaves nothing behind.
        let _ = tokio::fs::remove_file(&path).await;
        let mut file = received?;
        // A damaged transfer is refused here, before openraft sees it: the
        // state machine is never asked to install a file that is not whole.
        let expected = meta.clone();
        let (verified, file) = tokio::task::spawn_blocking(move || {
            let v = crate::store::snapshot::verify(&mut file);
            (v, file)
        })
        .await
        .map_err(|e| Status::internal(format!("verifying snapshot: {e}")))?;
        match verified {
            Ok(v) if v.meta == expected => {}
            Ok(v) => {
                return Err(Status::invalid_argument(format!(
                    "snapshot refused: its header says {:?} but the file holds {:?}",
                    expected.last_log_id, v.meta.last_log_id
                )))
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a damaged snapshot from the leader");
                return Err(Status::data_loss(format!("snapshot refused: {e}")));
            }
        }
        let snapshot = openraft::alias::SnapshotOf::<TypeConfig, std::fs::File> {
            meta,
            snapshot: file,
        };
        let resp = self
            .node
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(fatal)?;
        self.node.heard_from_leader();
        self.reply(&resp)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.answer(req, |raft, rpc| async move {
            raft.handle_transfer_leader(rpc).await
        })
        .await
    }
}

impl PeerService {
    fn members(&self) -> Vec<Member> {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = metrics.last_log_index;
        membership
            .nodes()
            .map(|(id, n)| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned())
                    .map(|l| l.map(|l| l.index));
                let matched = if *id == self.node.id && metrics.replication.is_some() {
                    Some(last)
                } else {
                    matched
                };
                Member {
                    id: *id,
                    addr: n.addr.clone(),
                    voter: voters.contains(id),
                    matched: matched.flatten(),
                    lag: matched.map(|m| last.unwrap_or(0).saturating_sub(m.unwrap_or(0))),
                }
            })
            .collect()
    }

    async fn membership_reply(&self) -> Result<Response<MembershipResponse>, Status> {
        Ok(Response::new(MembershipResponse {
            members: self.members(),
        }))
    }

    fn require_leader(&self) -> Result<(), Status> {
        let m = self.node.raft.metrics().borrow_watched().clone();
        if m.current_leader == Some(self.node.id) {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "node {} is not the leader; send membership changes to the leader (node {})",
                self.node.id,
                m.current_leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "unknown".into())
            )))
        }
    }
}

fn write_err(e: impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!("membership change failed: {e}"))
}

#[tonic::async_trait]
impl Admin for PeerService {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.node.raft.metrics().borrow_watched().clone();
        let ks = self.node.keyspace.clone();
        // Digest and applied index must describe the same state: the
        // digest is computed from a consistent view, and the applied index
        // is read again after it; if it moved, try again.
        let (digest, keys, applied) = tokio::task::spawn_blocking(move || {
            for _ in 0..20 {
                let before = ks_applied(&ks);
                let (d, n) = ks.digest()?;
                if ks_applied(&ks) == before {
                    return Ok((d, n, before));
                }
            }
            let (d, n) = ks.digest()?;
            Ok::<_, crate::store::KeyspaceError>((d, n, ks_applied(&ks)))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let removed = self.node.removal.reason().is_some();
        let health = match self.node.serving(&m) {
            Ok(()) => "SERVING".to_string(),
            Err(why) => format!("NOT_SERVING: {why}"),
        };
        Ok(Response::new(StatusResponse {
            node_id: self.node.id,
            leader_id: m.current_leader,
            term: m.current_term,
            state: if removed {
                "Removed".to_string()
            } else {
                format!("{:?}", m.state)
            },
            health,
            last_log_index: m.last_log_index,
            committed: m.local_committed.as_ref().map(|l| l.index),
            applied,
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            purged_index: m.purged.as_ref().map(|l| l.index),
            members: self.members(),
            digest,
            keys,
            cluster_id: self
                .node
                .cluster_id
                .get()
                .map(format_id)
                .unwrap_or_default(),
        }))
    }

    async fn log_state(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<LogStateResponse>, Status> {
        // Asked of RaftCore itself: the metrics may not describe the log
        // loaded from disk yet right after start-up.
        let last_log_index = self
            .node
            .raft
            .with_raft_state(|st| st.log_ids.last().map(|id| id.index))
            .await
            .map_err(fatal)?;
        Ok(Response::new(LogStateResponse {
            node_id: self.node.id,
            last_log_index,
        }))
    }

    async fn add_learner(
        &self,
        req: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.require_leader()?;
        let deadline = deadline_of(&req, ADMIN_TIMEOUT);
        let r = req.into_inner();
        if r.addr.is_empty() {
            return Err(Status::invalid_argument(
                "addr (HOST:PORT of the new node's peer port) is required",
            ));
        }
        let id = r.node_id;
        let addr = r.addr.clone();
        let added = tokio::time::timeout_at(
            deadline,
            self.node.raft.add_learner(id, RaftNode::new(r.addr), true),
        )
        .await;
        match added {
            Ok(r) => {
                r.map_err(write_err)?;
            }
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "node {id} was added as a learner but has not caught up within the timeout; \
                     it stays a learner and keeps receiving the log (is it running, with an \
                     empty data directory, at {addr}?) {}",
                    self.catch_up_state(id)
                )))
            }
        }
        // Caught up: it holds every entry the leader held once it was added.
        let target = self.node.raft.metrics().borrow_watched().last_log_index;
        let mut rx = self.node.raft.metrics();
        let caught_up = async {
            loop {
                {
                    let m = rx.borrow_watched();
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map(|l| l.index);
                    if matched >= target {
                        return Ok(());
                    }
                    if m.current_leader != Some(self.node.id) {
                        return Err(Status::unavailable(format!(
                            "node {} stopped being the leader while node {id} caught up; run \
                             `cluster status` against the new leader",
                            self.node.id
                        )));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(Status::unavailable("this node is shutting down"));
                }
            }
        };
        match tokio::time::timeout_at(deadline, caught_up).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "node {id} was added as a learner but has not caught up within the timeout; \
                     it stays a learner and keeps receiving the log {}",
                    self.catch_up_state(id)
                )))
            }
        }
        self.membership_reply().await
    }

    async fn promote(
        &self,
        req: Request<NodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.require_leader()?;
        let id = req.into_inner().node_id;
        let members = self.members();
        if !members.iter().any(|m| m.id == id) {
            return Err(Status::not_found(format!(
                "node {id} is not a member; add it as a learner first"
            )));
        }
        self.node
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(write_err)?;
        self.membership_reply().await
    }

    async fn remove(
        &self,
        req: Request<NodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.require_leader()?;
        let id = req.into_inner().node_id;
        let members = self.members();
        let Some(member) = members.iter().find(|m| m.id == id) else {
            return Err(Status::not_found(format!("node {id} is not a member")));
        };
        let change = if member.voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        // Applying the configuration that drops the member also drops its
        // incarnation from the record (see the state machine), in the same
        // log entry: the id can be given to a new, empty node, whichever
        // leader commits the change.
        self.node
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_err)?;
        self.membership_reply().await
    }

    async fn transfer_leader(
        &self,
        req: Request<NodeRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.require_leader()?;
        let deadline = deadline_of(&req, ADMIN_TIMEOUT);
        let to = req.into_inner().node_id;
        let me = self.node.id;
        {
            let m = self.node.raft.metrics().borrow_watched().clone();
            let membership = m.membership_config.membership();
            if to == me {
                return Err(Status::failed_precondition(format!(
                    "node {to} is already the leader"
                )));
            }
            if membership.get_node(&to).is_none() {
                let members: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
                return Err(Status::not_found(format!(
                    "node {to} is not a member of the cluster (members: {members:?})"
                )));
            }
            if !membership.voter_ids().any(|v| v == to) {
                return Err(Status::failed_precondition(format!(
                    "node {to} is a learner, not a voter: only a voter can lead; promote it \
                     first (`eventstore cluster promote --node-id {to}`)"
                )));
            }
            // Handing over gives up this leader's lease: a target that does
            // not answer would leave the cluster to an election instead.
            let answered = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&to).cloned().flatten())
                .is_some_and(|t| openraft::Instant::elapsed(&*t) <= self.node.lease);
            if !answered {
                return Err(Status::unavailable(format!(
                    "node {to} has not answered node {me} within the lease ({:?}): is it \
                     running? Leadership stays with node {me}",
                    self.node.lease
                )));
            }
        }
        self.node.transfer_leadership(to).await.map_err(fatal)?;
        let mut rx = self.node.raft.metrics();
        let moved = async {
            loop {
                let leader = rx.borrow_watched().current_leader;
                match leader {
                    Some(l) if l == to => return Ok(()),
                    Some(l) if l != me => {
                        return Err(Status::aborted(format!(
                            "node {l} became the leader instead of node {to}"
                        )))
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(Status::unavailable("this node is shutting down"));
                }
            }
        };
        match tokio::time::timeout_at(deadline, moved).await {
            Ok(r) => r?,
            Err(_) => {
                let leader = self.node.raft.metrics().borrow_watched().current_leader;
                return Err(Status::deadline_exceeded(format!(
                    "node {to} did not take over within the timeout (leader now: {}); is it \
                     running and caught up?",
                    leader
                        .map(|l| format!("node {l}"))
                        .unwrap_or_else(|| "none".into())
                )));
            }
        }
        self.status(Request::new(StatusRequest {})).await
    }
}

/// How long an admin command that waits (add-learner, transfer-leader)
/// works when the request carries no deadline.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl PeerService {
    /// Where a learner stands, for a message: its matched index and the
    /// leader's last log index.
    fn catch_up_state(&self, id: u64) -> String {
        let m = self.node.raft.metrics().borrow_watched().clone();
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index.to_string())
            .unwrap_or_else(|| "nothing".into());
        format!(
            "(it has {matched}, the leader's log ends at {})",
            m.last_log_index
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into())
        )
    }
}

fn ks_applied(ks: &crate::store::Keyspace) -> Option<u64> {
    crate::store::state_machine::applied_index(ks)
}
