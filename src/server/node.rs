//! One EventStore node: the Raft handle, the keyspace it reads from, and the
//! routing that lets any node serve any request.
//!
//! A request is parsed into an [`Op`], then served where it must be:
//! - on the leader, writes go through `client_write` (committed by a
//!   majority and applied before the answer) and reads through a read
//!   linearizer (the leader's lease, or a heartbeat round when the lease has
//!   lapsed) before reading the local keyspace;
//! - on a follower, a Load is served from the follower's own keyspace once
//!   it has applied up to a read index the leader confirmed after the Load
//!   arrived (batched, see [`super::read_index`]); every other request, and
//!   a Load the follower cannot serve that way, is relayed to the leader
//!   over the peer port and the leader's answer is returned. During an
//!   election the follower waits, within the request's deadline, for a
//!   leader to appear.
//!
//! A relay is tried again only when nothing can have taken effect: the
//! other node answered that it is not the leader (a structured field, which
//! it sends before proposing anything), the leader's address is not known
//! yet, or the connection was refused. A Load is also tried again when the
//! connection broke, since a read changes nothing. Every other answer of
//! the leader is passed on as it is: a definite refusal stays definite.
//! A write that carries a request id is also tried again when its outcome
//! is unknown (the relay broke in transit, or leadership moved under it):
//! the state machine answers a second entry with the same id with the
//! first one's result, so a retry never applies a write twice.
//!
//! Time: the leader stamps entries from its [`Timeline`] and judges expiry
//! by `max(replicated clock, its stamp's time)`. A value it finds expired
//! while the replicated clock has not reached its deadline is reported
//! absent only after a purge entry stamped now has moved the replicated
//! clock past the deadline, so no later leader, whatever its clock, serves
//! it again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::LinearizerOption;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::api::error::{ApiError, ANSWERED_KEY, NOT_LEADER_KEY, OUTCOME_UNKNOWN};
use crate::api::handler::{Handler, ReadIndex, Reply, Request};
use crate::api::request::Op;
use crate::api::request_id::REQUEST_ID_HEADER;
use crate::config::{DefaultTtls, ExpirySettings, Limits};
use crate::proto::peer::forward_client::ForwardClient;
use crate::proto::peer::ReadIndexRequest;
use crate::proto::protob::{DeleteResponse, LoadResponse, SaveResponse};
use crate::raft::network::{Channels, Observed, Removal};
use crate::raft::network::{CLUSTER_ID_KEY, FOREIGN_CLUSTER_KEY, NODE_ID_KEY};
use crate::raft::types::{NodeId, Raft, TypeConfig};
use crate::store::cluster_id::format_id;
use crate::store::{Applied, ClusterId, Command, Keyspace, Location, Stamp};

use super::clock::Timeline;
use super::read_index::{AskLeader, ReadIndexQueue};

/// Everything a node needs to serve requests. Cheap to share behind an `Arc`.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// This node's data-directory incarnation.
    pub incarnation: u64,
    /// The id of the cluster this node belongs to, once known.
    pub cluster_id: ClusterId,
    /// Incarnations peers reported to this node.
    pub observed: Observed,
    /// The Raft handle.
    pub raft: Raft,
    /// The local replica of the keyspace.
    pub keyspace: Keyspace,
    /// Client input limits.
    pub limits: Limits,
    /// Per-scope default TTLs.
    pub default_ttls: DefaultTtls,
    /// Expiry settings.
    pub expiry: ExpirySettings,
    /// Channels to peers, shared with the Raft network.
    pub channels: Channels,
    /// Deadline applied to requests that carry none.
    pub default_timeout: Duration,
    /// How old a quorum acknowledgement may be for the leader to serve a
    /// read from its lease: a margin below openraft's lease (the maximum
    /// election timeout, during which followers refuse to elect anyone
    /// else), to absorb clock-rate drift between nodes.
    pub read_lease: Duration,
    /// This node's prediction of the cluster time, for its stamps.
    pub timeline: std::sync::Arc<Timeline>,
    /// Serialises the purges that reads propose to make an expiry binding.
    pub expiry_tick: tokio::sync::Mutex<()>,
    /// The leader lease (the maximum election timeout): a follower that
    /// heard nothing from its leader for this long has lost it.
    pub lease: Duration,
    /// When this node last accepted a message of the leader it follows.
    pub leader_contact: std::sync::Mutex<Option<std::time::Instant>>,
    /// Set once this node learns that it was removed from the cluster.
    pub removal: Removal,
    /// Where a Load on a follower waits for a read index.
    pub read_index: ReadIndexQueue,
    /// The term (plus one; 0: none) in which this node, as leader, asked to
    /// hand leadership over: see [`Node::transfer_leadership`].
    pub transfer_term: std::sync::atomic::AtomicU64,
}

/// The message of every refusal by a node that was removed.
pub const REMOVED_MESSAGE: &str = "this node was removed from the cluster; stop it";

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Notes that the leader this node follows just reached it.
    pub fn heard_from_leader(&self) {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// Whether the leader this node follows reached it within the lease.
    pub fn leader_in_touch(&self) -> bool {
        self.leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= self.lease)
    }

    /// Whether this node, as leader, can count on a quorum: it is the only
    /// voter, or a quorum acknowledged it within the read lease.
    pub fn quorum_in_touch(&self, m: &openraft::RaftMetrics<TypeConfig>) -> bool {
        // Every write asks this (see `leads_with_fresh_quorum`): no allocation.
        let mut voters = m.membership_config.membership().voter_ids();
        if voters.next() == Some(self.id) && voters.next().is_none() {
            return true;
        }
        m.last_quorum_acked
            .as_ref()
            .is_some_and(|t| openraft::Instant::elapsed(&**t) <= self.read_lease)
    }

    /// Whether this node can serve requests now, and if not, why.
    pub fn serving(&self, m: &openraft::RaftMetrics<TypeConfig>) -> Result<(), String> {
        if m.running_state.is_err() {
            return Err("the Raft core stopped".into());
        }
        if let Some(why) = self.removal.reason() {
            return Err(format!("removed from the cluster: {why}"));
        }
        let Some(leader) = m.current_leader else {
            return Err("no leader known".into());
        };
        if m.membership_config.membership().get_node(&leader).is_none() {
            return Err(format!("the address of leader {leader} is not known"));
        }
        // Caught up: has applied everything it knows to be committed.
        let caught_up = match (&m.local_committed, &m.last_applied) {
            (Some(c), Some(a)) => a.index >= c.index,
            _ => false,
        };
        if !caught_up {
            return Err("has not applied everything committed yet".into());
        }
        if leader == self.id {
            if !self.quorum_in_touch(m) {
                return Err(
                    "leader without a quorum: no quorum acknowledged it within its lease".into(),
                );
            }
        } else if !self.leader_in_touch() {
            return Err(format!("no message from leader {leader} within the lease"));
        }
        Ok(())
    }

    /// A stamp for an entry this node proposes now.
    pub fn stamp(&self) -> Stamp {
        self.timeline.stamp(now_ms(), std::time::Instant::now())
    }

    /// Parses and serves `req`. `request_id` is the client's request id, if
    /// it sent one. `relayed` is true when another node relayed it here:
    /// then it is served only if this node is the leader.
    pub async fn handle(
        &self,
        req: Request,
        request_id: Option<String>,
        deadline: Instant,
        relayed: bool,
    ) -> Result<Reply, ApiError> {
        if let Some(why) = self.removal.reason() {
            return Err(ApiError::FailedPrecondition(format!(
                "{REMOVED_MESSAGE} (node {}: {why})",
                self.id
            )));
        }
        let op = match &req {
            Request::Save(r) => Op::parse_save(r, &self.limits, &self.default_ttls)?,
            Request::Load(r) => Op::parse_load(r, &self.limits)?,
            Request::Delete(r) => Op::parse_delete(r, &self.limits)?,
        };
        let retry_unknown = request_id.is_some() && !matches!(op, Op::Load { .. });
        loop {
            let leader = match self
                .serve_locally(&op, request_id.as_deref(), deadline)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(Local::Failed(e)) => return Err(e),
                Err(Local::NotLeader(hint)) => {
                    if relayed {
                        return Err(ApiError::NotLeader(format!(
                            "node {} is not the leader; retry",
                            self.id
                        )));
                    }
                    match hint {
                        Some(l) if l != self.id => l,
                        _ => self.wait_for_leader(deadline).await?,
                    }
                }
            };
            if leader == self.id {
                continue;
            }
            if let Op::Load { location } = &op {
                match self.read_here(location, deadline).await {
                    Ok(reply) => return Ok(reply),
                    Err(Local::Failed(e)) => return Err(e),
                    Err(Local::NotLeader(_)) => {}
                }
            }
            crate::metrics::RELAYED
                .with_label_values(&[req.method()])
                .inc();
            // A leader that stops answering without closing its connections
            // (a dead host, a partition) would hold the relay until the
            // connection is found dead; a newer leader ends it at once.
            let relayed = tokio::select! {
                r = self.relay(leader, &req, request_id.as_deref(), deadline) => r,
                new = self.leader_replaced(leader) => Err(RelayError::Lost(format!(
                    "node {new} became leader while the request was relayed to node {leader}"
                ))),
            };
            let why = match relayed {
                Ok(reply) => return Ok(reply),
                // The write may have been applied, but it carries a request
                // id: a second entry with it is answered, not applied.
                Err(RelayError::Answered(ApiError::Unavailable(m)))
                    if retry_unknown
                        && m.starts_with(OUTCOME_UNKNOWN)
                        && Instant::now() + RETRY_MARGIN < deadline =>
                {
                    tracing::debug!(error = %m, "retrying a relayed write with its request id");
                    m
                }
                Err(RelayError::Answered(e)) => return Err(e),
                Err(RelayError::NotSent(why)) => why,
                // A read changes nothing: try the leader again.
                Err(RelayError::Lost(why)) if matches!(req, Request::Load(_)) => why,
                Err(RelayError::Lost(why))
                    if retry_unknown && Instant::now() + RETRY_MARGIN < deadline =>
                {
                    tracing::debug!(error = %why, "retrying a relayed write with its request id");
                    why
                }
                Err(RelayError::Lost(why)) if Instant::now() >= deadline => {
                    return Err(ApiError::Timeout(format!(
                        "the write was not confirmed by leader {leader} before the deadline; it \
                         may or may not have been applied ({why})"
                    )))
                }
                Err(RelayError::Lost(why)) => {
                    return Err(ApiError::Unavailable(format!(
                        "{OUTCOME_UNKNOWN}: the connection to leader {leader} broke while the \
                         request was in flight ({why})"
                    )))
                }
            };
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable(format!(
                    "no leader could serve the request before its deadline: {why}"
                )));
            }
            tokio::time::sleep(RELAY_RETRY).await;
        }
    }

    async fn serve_locally(
        &self,
        op: &Op,
        request_id: Option<&str>,
        deadline: Instant,
    ) -> Result<Reply, Local> {
        let request = request_id.map(str::to_string);
        match op {
            Op::Save {
                location,
                value,
                ttl_secs,
            } => {
                let ttl_ms = if *ttl_secs == 0 {
                    u64::MAX
                } else {
                    ttl_secs.saturating_mul(1000)
                };
                self.write(
                    Command::Save {
                        key: location.encode(),
                        value: value.clone(),
                        ttl_ms,
                        stamp: self.stamp(),
                        request,
                    },
                    deadline,
                )
                .await?;
                Ok(Reply::Save(SaveResponse {}))
            }
            Op::Delete { location } => {
                self.write(
                    Command::Delete {
                        key: location.encode(),
                        stamp: self.stamp(),
                        request,
                    },
                    deadline,
                )
                .await?;
                Ok(Reply::Delete(DeleteResponse {}))
            }
            Op::Load { location } => {
                self.linearize(deadline).await?;
                let now = self.stamp().time_ms();
                match self.read_local(location, now)? {
                    LocalRead::Value(value) => Ok(Reply::Load(LoadResponse {
                        value: value.into(),
                    })),
                    LocalRead::Absent => Err(Local::Failed(not_found(location))),
                    LocalRead::ExpiryNotBinding { deadline_ms } => {
                        // Expired by this leader's time, not yet by the
                        // replicated clock: make the expiry binding on every
                        // later leader before reporting it.
                        self.advance_clock(deadline_ms, deadline).await?;
                        // Read again by the replicated clock alone: a Save
                        // may have replaced the value meanwhile.
                        match self.read_local(location, 0)? {
                            LocalRead::Value(value) => Ok(Reply::Load(LoadResponse {
                                value: value.into(),
                            })),
                            _ => Err(Local::Failed(not_found(location))),
                        }
                    }
                }
            }
        }
    }

    /// Reads `location` from the local keyspace, judging expiry by
    /// `max(replicated clock, cluster_time_ms)`.
    fn read_local(&self, location: &Location, cluster_time_ms: u64) -> Result<LocalRead, Local> {
        let Some(stored) = self
            .keyspace
            .get_raw(&location.encode())
            .map_err(|e| internal(location, e))?
        else {
            return Ok(LocalRead::Absent);
        };
        let clock = self.keyspace.clock().map_err(|e| internal(location, e))?;
        if clock.max(cluster_time_ms) < stored.deadline_ms {
            Ok(LocalRead::Value(stored.value))
        } else if stored.deadline_ms > clock {
            Ok(LocalRead::ExpiryNotBinding {
                deadline_ms: stored.deadline_ms,
            })
        } else {
            Ok(LocalRead::Absent)
        }
    }

    /// Serves a Load on a follower from its own keyspace: asks the leader
    /// for a read index (shared with the Loads waiting alongside), waits
    /// until this node has applied that far, and reads. Everything a client
    /// saw acknowledged before the Load arrived is at or below the index.
    /// `Local::NotLeader` means "relay it": there was no read index, this
    /// node lags too far, or the value expired by the leader's time but not
    /// yet by the replicated clock (the leader makes that expiry binding).
    async fn read_here(&self, location: &Location, deadline: Instant) -> Result<Reply, Local> {
        let relay = |why: String| {
            tracing::debug!(%why, "a follower read goes to the leader");
            crate::metrics::FOLLOWER_READS
                .with_label_values(&["relayed"])
                .inc();
            Local::NotLeader(None)
        };
        let ri = self.read_index.read_index(deadline).await.map_err(relay)?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.lease);
        if let Err(e) = self
            .raft
            .wait(Some(wait))
            .applied_index_at_least(Some(ri.index), "follower read")
            .await
        {
            return Err(relay(format!(
                "not applied up to read index {} in time: {e}",
                ri.index
            )));
        }
        let answer = match self.read_local(location, ri.cluster_time_ms)? {
            LocalRead::Value(value) => Ok(Reply::Load(LoadResponse {
                value: value.into(),
            })),
            LocalRead::Absent => Err(Local::Failed(not_found(location))),
            LocalRead::ExpiryNotBinding { deadline_ms } => {
                return Err(relay(format!(
                    "expired at {deadline_ms} by the leader's time, not yet by the replicated clock"
                )))
            }
        };
        crate::metrics::FOLLOWER_READS
            .with_label_values(&["served"])
            .inc();
        answer
    }

    /// Confirms, for a follower about to serve reads, that this node leads
    /// (see [`Handler::read_index`]).
    pub async fn read_index(&self, deadline: Instant) -> Result<ReadIndex, ApiError> {
        if let Some(why) = self.removal.reason() {
            return Err(ApiError::FailedPrecondition(format!(
                "{REMOVED_MESSAGE} (node {}: {why})",
                self.id
            )));
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.read_lease);
        let option = LinearizerOption::new(Some(self.read_lease), true).with_wait_timeout(wait);
        let linearizer = self.raft.get_read_linearizer(option).await.map_err(|e| {
            match self.linearizer_error(e) {
                Local::NotLeader(_) => {
                    ApiError::NotLeader(format!("node {} is not the leader; retry", self.id))
                }
                Local::Failed(e) => e,
            }
        })?;
        let clock = self
            .keyspace
            .clock()
            .map_err(|e| ApiError::Internal(format!("reading the replicated clock: {e}")))?;
        Ok(ReadIndex {
            index: linearizer.read_log_id().index(),
            cluster_time_ms: clock.max(self.stamp().time_ms()),
        })
    }

    /// Proposes a purge stamped now, unless the replicated clock has
    /// already reached `target_ms`, and waits until it is applied here.
    async fn advance_clock(&self, target_ms: u64, deadline: Instant) -> Result<(), Local> {
        let _one_at_a_time = self.expiry_tick.lock().await;
        if self.keyspace.clock().unwrap_or(0) >= target_ms {
            return Ok(());
        }
        let purge = Command::Purge {
            stamp: self.stamp(),
            limit: self.expiry.purge_batch,
        };
        self.write(purge, deadline).await.map(|_| ())
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    ///
    /// First checks, from the leader's lease (or one heartbeat round, at
    /// most one lease long), that a quorum still follows this leader: a
    /// leader cut off from its quorum answers UNAVAILABLE without proposing
    /// anything, instead of leaving the write's outcome unknown. While the
    /// published metrics already show a fresh quorum acknowledgement, the
    /// check costs no message to the Raft core.
    pub async fn write(&self, cmd: Command, deadline: Instant) -> Result<Applied, Local> {
        if !self.leads_with_fresh_quorum() {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(self.read_lease);
            match self
                .raft
                .get_read_linearizer(
                    LinearizerOption::new(Some(self.read_lease), true).with_wait_timeout(wait),
                )
                .await
            {
                Ok(_) => {}
                Err(e) => return Err(self.linearizer_error(e)),
            }
        }
        // Waiting for the lease may have used up the deadline: then the
        // answer is a definite refusal, not a write of unknown outcome.
        if Instant::now() >= deadline {
            return Err(Local::Failed(ApiError::Timeout(
                "the deadline passed before the write was proposed; nothing was applied".into(),
            )));
        }
        let res = tokio::time::timeout_at(deadline, self.raft.client_write(cmd)).await;
        match res {
            Err(_) => Err(Local::Failed(ApiError::Timeout(
                "the write was not confirmed before the deadline; it may or may not have been applied"
                    .into(),
            ))),
            Ok(Ok(resp)) => Ok(resp.data),
            // Refused before anything was proposed: safe to send elsewhere.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Local::NotLeader(f.leader_id))
            }
            // Proposed, then leadership moved: another node may commit it.
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(Local::Failed(ApiError::Unavailable(format!(
                    "{OUTCOME_UNKNOWN}: leadership moved away from node {} while the write was \
                     in flight; retrying with a request id is safe",
                    self.id
                ))))
            }
            Ok(Err(RaftError::APIError(e))) => Err(Local::Failed(ApiError::Unavailable(
                format!("write rejected: {e}"),
            ))),
            // Raft stopped (shutdown) with the entry possibly replicated.
            Ok(Err(RaftError::Fatal(e))) => Err(Local::Failed(ApiError::Unavailable(format!(
                "{OUTCOME_UNKNOWN}: node {} stopped while the write was in flight: {e}",
                self.id
            )))),
        }
    }

    /// Returns once a read of the local keyspace is linearizable: this node
    /// is the leader, holds a lease (or confirmed leadership with a quorum
    /// now), and has applied everything committed before the read began.
    ///
    /// While the published metrics show this node leading with a fresh
    /// quorum acknowledgement and an entry of its own term applied, the
    /// check costs no message to the Raft core: see [`Node::reads_on_lease`].
    async fn linearize(&self, deadline: Instant) -> Result<(), Local> {
        if self.reads_on_lease() {
            return Ok(());
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.read_lease);
        let option = LinearizerOption::new(Some(self.read_lease), true).with_wait_timeout(wait);
        let linearizer = self
            .raft
            .get_read_linearizer(option)
            .await
            .map_err(|e| self.linearizer_error(e))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match linearizer
            .try_await_ready(&self.raft, Some(remaining))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Local::Failed(ApiError::Unavailable(
                "the state machine did not catch up before the deadline".into(),
            ))),
            Err(e) => Err(Local::Failed(ApiError::Unavailable(format!(
                "node {} cannot serve: {e}",
                self.id
            )))),
        }
    }

    fn linearizer_error(
        &self,
        e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>,
    ) -> Local {
        match e {
            RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                Local::NotLeader(f.leader_id)
            }
            RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)) => {
                tracing::debug!(error = %e, "no quorum");
                Local::Failed(ApiError::Unavailable(format!(
                    "leader {} cannot reach a quorum of voters; nothing was applied",
                    self.id
                )))
            }
            RaftError::Fatal(e) => Local::Failed(ApiError::Unavailable(format!(
                "node {} cannot serve: {e}",
                self.id
            ))),
        }
    }

    /// Whether the latest metrics the Raft core published show this node
    /// leading with a quorum acknowledgement younger than the read lease.
    ///
    /// The metrics can only lag the core, so a `true` here rests on an
    /// acknowledgement that really happened: the same fact the lease check
    /// inside the core would find. A write then goes straight to
    /// `client_write`, without a round trip through the core for the check;
    /// when the answer is `false` (a follower, or a leader whose quorum is
    /// silent) the write asks the core, which may run a heartbeat round.
    fn leads_with_fresh_quorum(&self) -> bool {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.current_leader == Some(self.id) && self.quorum_in_touch(&m)
    }

    /// Whether the latest published metrics show this node leading with a
    /// quorum acknowledgement younger than the read lease, and having
    /// applied an entry of its own term. Then a read of the local keyspace
    /// is linearizable without asking the Raft core:
    /// - no other leader can have been elected since that acknowledgement
    ///   (the lease argument of the core's own check, which reads the same
    ///   acknowledgement time; the metrics only lag it);
    /// - every entry of earlier terms is applied (the entry of its own term
    ///   comes after them), and every write of its own term that a client
    ///   saw acknowledged was applied here before the acknowledgement.
    ///
    /// Not in a term in which this node asked to hand leadership over: the
    /// target's election is authorized by this leader and followers grant
    /// it inside the lease, so only the Raft core (which refuses reads
    /// while a transfer is under way) can judge such a read.
    fn reads_on_lease(&self) -> bool {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.current_leader == Some(self.id)
            && self.transfer_term.load(std::sync::atomic::Ordering::SeqCst) != m.current_term + 1
            && self.quorum_in_touch(&m)
            && m.last_applied.as_ref().is_some_and(|a| {
                a.leader_id.term == m.current_term && a.leader_id.node_id == self.id
            })
    }

    /// Asks the Raft core to hand leadership to `to`. From now on in this
    /// term, reads no longer rest on the published metrics alone (see
    /// [`Node::reads_on_lease`]); the mark is set before the core hears of
    /// the transfer.
    pub async fn transfer_leadership(
        &self,
        to: NodeId,
    ) -> Result<(), openraft::error::Fatal<TypeConfig>> {
        let term = self.raft.metrics().borrow_watched().current_term;
        self.transfer_term
            .store(term + 1, std::sync::atomic::Ordering::SeqCst);
        self.raft.trigger().transfer_leader(to).await
    }

    /// Whether this node currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    /// Runs `task` every `period` while this node is the leader, until
    /// `shutdown` turns true. Used by the purger and the registrar.
    pub async fn every_tick_as_leader<F, Fut>(
        &self,
        period: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        mut task: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if self.is_leader() {
                task().await;
            }
        }
    }

    /// Waits until some node is known to be leader, or the deadline.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, ApiError> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow_watched().current_leader {
                return Ok(l);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ApiError::Unavailable(format!(
                        "node {} is shutting down",
                        self.id
                    )))
                }
                Err(_) => {
                    return Err(ApiError::Unavailable(
                        "no leader was elected before the request's deadline (is a majority of nodes up?)"
                            .into(),
                    ))
                }
            }
        }
    }

    /// Resolves, with its id, once this node learns of a new leader other
    /// than `leader`. Only a change counts: the published metrics may lag
    /// the Raft core that named `leader`, so a different leader already
    /// shown when this starts is older news, not a replacement. Watches
    /// the server metrics, which change with the vote and the leader only,
    /// not with every applied entry.
    async fn leader_replaced(&self, leader: NodeId) -> NodeId {
        let mut rx = self.raft.server_metrics();
        let shown = rx.borrow_watched().current_leader;
        loop {
            if rx.changed().await.is_err() {
                // The Raft core stopped: the relay ends on its own.
                return std::future::pending().await;
            }
            match rx.borrow_watched().current_leader {
                Some(l) if l != leader && Some(l) != shown => return l,
                _ => {}
            }
        }
    }

    /// The peer address of `node`, from the current membership.
    pub fn peer_addr(&self, node: NodeId) -> Option<String> {
        let m = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        m.membership().get_node(&node).map(|n| n.addr.clone())
    }

    fn forward_client(&self, leader: NodeId) -> Result<ForwardClient<Channel>, RelayError> {
        let addr = self.peer_addr(leader).ok_or_else(|| {
            RelayError::NotSent(format!("the address of leader {leader} is not known yet"))
        })?;
        let ch = self.channels.get(&addr).map_err(|e| {
            RelayError::Answered(ApiError::Unavailable(format!(
                "bad leader address {addr}: {e}"
            )))
        })?;
        Ok(ForwardClient::new(ch)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// This node's identity as metadata of a call to a peer.
    fn sender_metadata(&self) -> Vec<(&'static str, tonic::metadata::AsciiMetadataValue)> {
        [
            self.cluster_id
                .get()
                .and_then(|c| format_id(c).parse().ok())
                .map(|v| (CLUSTER_ID_KEY, v)),
            self.id.to_string().parse().ok().map(|v| (NODE_ID_KEY, v)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    async fn relay(
        &self,
        leader: NodeId,
        req: &Request,
        request_id: Option<&str>,
        deadline: Instant,
    ) -> Result<Reply, RelayError> {
        let mut client = self.forward_client(leader)?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        // The deadline and the request id travel with the relayed request.
        let id = match request_id.map(|id| id.parse::<tonic::metadata::AsciiMetadataValue>()) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Err(RelayError::Answered(ApiError::InvalidArgument(format!(
                    "{REQUEST_ID_HEADER} is not a valid metadata value"
                ))))
            }
            None => None,
        };
        // So does this node's identity: a node of another cluster at the
        // leader's address refuses the request.
        let sender = self.sender_metadata();
        fn with_meta<T>(
            msg: T,
            timeout: Duration,
            id: &Option<tonic::metadata::AsciiMetadataValue>,
            sender: &[(&'static str, tonic::metadata::AsciiMetadataValue)],
        ) -> tonic::Request<T> {
            let mut r = tonic::Request::new(msg);
            r.set_timeout(timeout);
            if let Some(id) = id {
                r.metadata_mut().insert(REQUEST_ID_HEADER, id.clone());
            }
            for (k, v) in sender {
                r.metadata_mut().insert(*k, v.clone());
            }
            r
        }
        let res = match req.clone() {
            Request::Save(r) => client
                .save(with_meta(r, timeout, &id, &sender))
                .await
                .map(|r| Reply::Save(r.into_inner())),
            Request::Load(r) => client
                .load(with_meta(r, timeout, &id, &sender))
                .await
                .map(|r| Reply::Load(r.into_inner())),
            Request::Delete(r) => client
                .delete(with_meta(r, timeout, &id, &sender))
                .await
                .map(|r| Reply::Delete(r.into_inner())),
        };
        res.map_err(|s| RelayError::of(&s, leader))
    }
}

impl Handler for Node {
    async fn handle(
        &self,
        req: Request,
        request_id: Option<String>,
        deadline: Instant,
        relayed: bool,
    ) -> Result<Reply, ApiError> {
        Node::handle(self, req, request_id, deadline, relayed).await
    }

    async fn read_index(&self, deadline: Instant) -> Result<ReadIndex, ApiError> {
        Node::read_index(self, deadline).await
    }

    fn default_timeout(&self) -> Duration {
        self.default_timeout
    }
}

impl AskLeader for Node {
    /// Asks the leader this node follows, bounded by the lease (a leader
    /// that does not answer within it may have been replaced) and ended
    /// early when another leader is known.
    async fn ask_read_index(&self) -> Result<ReadIndex, String> {
        let leader = self
            .raft
            .metrics()
            .borrow_watched()
            .current_leader
            .ok_or("no leader known")?;
        if leader == self.id {
            return Err("this node leads".into());
        }
        let mut client = self.forward_client(leader).map_err(|e| format!("{e:?}"))?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(self.lease);
        for (k, v) in self.sender_metadata() {
            req.metadata_mut().insert(k, v);
        }
        let asked = tokio::select! {
            r = tokio::time::timeout(self.lease, client.read_index(req)) => r,
            new = self.leader_replaced(leader) => {
                return Err(format!("node {new} became leader while leader {leader} was asked"))
            }
        };
        match asked {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Ok(ReadIndex {
                    index: r.index,
                    cluster_time_ms: r.cluster_time_ms,
                })
            }
            Ok(Err(s)) => Err(format!("leader {leader}: {}", describe(&s))),
            Err(_) => Err(format!(
                "leader {leader} gave no read index within the lease"
            )),
        }
    }
}

/// Pause before relaying again after a relay that can be retried.
const RELAY_RETRY: Duration = Duration::from_millis(20);

/// A write whose outcome is unknown is retried with its request id only
/// while at least this much of its deadline is left.
const RETRY_MARGIN: Duration = Duration::from_millis(100);

/// Why a relay to the leader failed.
#[derive(Debug)]
enum RelayError {
    /// Nothing can have taken effect: the other node answered that it is
    /// not the leader, the leader's address is not known yet, or the
    /// connection was refused. Safe to send again.
    NotSent(String),
    /// The connection failed after the request may have reached the
    /// leader: a write may or may not have been applied.
    Lost(String),
    /// The leader's own answer, passed on unchanged.
    Answered(ApiError),
}

impl RelayError {
    /// Classifies a failed relay by what the status carries: the serving
    /// node marks its own answers ([`ANSWERED_KEY`]) and its "not the
    /// leader" refusals ([`NOT_LEADER_KEY`]). An unmarked status with a
    /// code the transport produces (a refused, reset or timed-out
    /// connection) came from the transport; any other code can only be an
    /// answer (e.g. NOT_FOUND from a node that does not mark its answers).
    fn of(s: &tonic::Status, leader: NodeId) -> Self {
        use tonic::Code;
        // A node of another cluster holds the leader's address: it refused
        // the request before reading it.
        if s.metadata().contains_key(FOREIGN_CLUSTER_KEY) {
            crate::metrics::CLUSTER_ID_MISMATCHES
                .with_label_values(&["outgoing"])
                .inc();
            return RelayError::NotSent(format!("leader {leader}: {}", s.message()));
        }
        if s.metadata().contains_key(NOT_LEADER_KEY) {
            return RelayError::NotSent(s.message().to_string());
        }
        let transport_code = matches!(
            s.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::Internal
                | Code::DeadlineExceeded
        );
        if s.metadata().contains_key(ANSWERED_KEY) || !transport_code {
            return RelayError::Answered(ApiError::from_status(s));
        }
        let why = format!("leader {leader}: {}", describe(s));
        if crate::api::error::connection_refused(s) {
            RelayError::NotSent(why)
        } else {
            RelayError::Lost(why)
        }
    }
}

/// A status's message with the errors that caused it.
fn describe(s: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Why a request could not be served on this node.
#[derive(Debug)]
pub enum Local {
    /// This node is not the leader; the leader's id if known.
    NotLeader(Option<NodeId>),
    /// The request failed for good.
    Failed(ApiError),
}

/// What the local keyspace holds at a location, judged at a cluster time.
enum LocalRead {
    /// A value whose deadline is after that time.
    Value(Vec<u8>),
    /// No value, or one expired by the replicated clock.
    Absent,
    /// A value expired by that time but not yet by the replicated clock.
    ExpiryNotBinding { deadline_ms: u64 },
}

fn internal(location: &Location, e: crate::store::KeyspaceError) -> Local {
    Local::Failed(ApiError::Internal(format!("reading {location}: {e}")))
}

fn not_found(location: &Location) -> ApiError {
    ApiError::NotFound(format!(
        "no value at {location} (never saved, deleted, or expired)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn marked(mut s: tonic::Status, key: &'static str) -> tonic::Status {
        s.metadata_mut()
            .insert(key, MetadataValue::from_static("1"));
        s
    }

    #[test]
    fn not_the_leader_is_read_from_its_field_not_from_the_message() {
        let refusal = marked(
            tonic::Status::unavailable("node 1 is not the leader; retry"),
            NOT_LEADER_KEY,
        );
        assert!(matches!(
            RelayError::of(&refusal, 1),
            RelayError::NotSent(_)
        ));
        // The same words without the field: not a refusal to rely on.
        let words = tonic::Status::unavailable("node 1 is not the leader; retry");
        assert!(matches!(RelayError::of(&words, 1), RelayError::Lost(_)));
        // An answer that only a node gives, even unmarked.
        let absent = tonic::Status::not_found("no value at Global key");
        assert!(matches!(
            RelayError::of(&absent, 1),
            RelayError::Answered(ApiError::NotFound(_))
        ));
        let answered = marked(
            tonic::Status::unavailable("a message that mentions not the leader"),
            ANSWERED_KEY,
        );
        assert!(matches!(
            RelayError::of(&answered, 1),
            RelayError::Answered(ApiError::Unavailable(_))
        ));
    }

    #[test]
    fn a_definite_answer_of_the_leader_is_passed_on_unchanged() {
        let msg = "leader 0 cannot reach a quorum of voters; nothing was applied";
        let s = marked(tonic::Status::unavailable(msg), ANSWERED_KEY);
        match RelayError::of(&s, 0) {
            RelayError::Answered(ApiError::Unavailable(m)) => assert_eq!(m, msg),
            other => panic!("{other:?}"),
        }
        let unknown = format!("{OUTCOME_UNKNOWN}: leadership moved");
        let s = marked(tonic::Status::unavailable(unknown.clone()), ANSWERED_KEY);
        match RelayError::of(&s, 0) {
            RelayError::Answered(ApiError::Unavailable(m)) => assert_eq!(m, unknown),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_means_the_request_was_not_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let ch = Channels::default()
            .get(&format!("127.0.0.1:{port}"))
            .unwrap();
        let s = ForwardClient::new(ch)
            .load(crate::proto::protob::LoadRequest { location: None })
            .await
            .unwrap_err();
        assert!(
            matches!(RelayError::of(&s, 0), RelayError::NotSent(_)),
            "{}",
            describe(&s)
        );
    }
}
