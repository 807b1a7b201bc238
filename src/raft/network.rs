//! The outgoing half of the peer network: openraft's `RaftNetworkV2` over
//! gRPC to each peer's `RaftPeer` service.
//!
//! One lazily connected tonic channel per peer address, shared by every RPC
//! to that peer (tonic reconnects it with backoff). Peer addresses are host
//! names resolved by DNS on every (re)connect, so a pod that restarts with a
//! new IP is found again. Every message names its target node id; the
//! receiver rejects messages meant for another node.
//!
//! Two refusals of a peer are understood here, by a metadata key on the
//! status rather than by its words: a peer whose data directory was lost
//! ([`LOST_DATA_KEY`]) is backed off from and reported at a low rate, and a
//! leader that answers a vote request with [`REMOVED_KEY`] tells this node
//! that it is no longer a member ([`Removal`]). A third, a peer of another
//! cluster ([`FOREIGN_CLUSTER_KEY`]), is logged clearly at a low rate and
//! backed off from like a peer that lost its data.
//!
//! Every message carries this node's id and cluster id; a reply that
//! names another cluster than this node's is taken for a refusal too.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

use super::types::{Node, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::proto::peer::raft_peer_client::RaftPeerClient;
use crate::proto::peer::{RaftPayload, SnapshotChunk};
use crate::store::cluster_id::{admits, format_id};
use crate::store::snapshot::{bincode_decode, bincode_encode};
use crate::store::{ClusterId, Keyspace};
use crate::tls::TlsSource;

/// Size of each snapshot chunk sent to a follower.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// How snapshots are sent: a transfer that makes no progress (no chunk
/// accepted by the receiver) for `stall_timeout` is abandoned, and
/// openraft retries it; `rate` caps the bytes sent per second.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotTransfer {
    /// How long a transfer may go without progress.
    pub stall_timeout: Duration,
    /// The most bytes per second to send, if limited.
    pub rate: Option<u64>,
}

impl Default for SnapshotTransfer {
    fn default() -> Self {
        SnapshotTransfer {
            stall_timeout: Duration::from_secs(30),
            rate: None,
        }
    }
}

/// After the last chunk, the receiver verifies the file and loads it into
/// its database; it is given the stall timeout plus one second for every
/// this many bytes to answer.
const SNAPSHOT_LOAD_BYTES_PER_SEC: u64 = 4 << 20;

/// How often a transfer in progress is logged.
const SNAPSHOT_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Metadata key on a peer's refusal of a Raft message because its data
/// directory is not the one the cluster has on record (it lost its data).
pub const LOST_DATA_KEY: &str = "eventstore-lost-data";

/// Metadata key with the refusing peer's own incarnation (hex), next to
/// [`LOST_DATA_KEY`].
pub const INCARNATION_KEY: &str = "eventstore-incarnation";

/// Metadata key on a leader's refusal of a vote or pre-vote request from a
/// node that is not a member of the cluster (it was removed).
pub const REMOVED_KEY: &str = "eventstore-removed";

/// Metadata key with a node's cluster id (16 hex digits): on a relayed
/// request (the sender's), on every answer of the peer port (the
/// replier's), and on a refusal with [`FOREIGN_CLUSTER_KEY`].
pub const CLUSTER_ID_KEY: &str = "eventstore-cluster-id";

/// Metadata key with the sending node's id, on a relayed request.
pub const NODE_ID_KEY: &str = "eventstore-node-id";

/// Metadata key on a refusal of a message from a node of another cluster.
pub const FOREIGN_CLUSTER_KEY: &str = "eventstore-foreign-cluster";

/// How often the same refusal of a peer that lost its data is logged again,
/// after the first time.
const LOST_DATA_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Whether the cluster told this node that it is no longer a member, and why.
#[derive(Clone, Default)]
pub struct Removal {
    inner: Arc<Mutex<Option<String>>>,
}

impl Removal {
    /// Why this node was told it was removed, if it was.
    pub fn reason(&self) -> Option<String> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records that this node was removed; returns true the first time.
    pub fn set(&self, why: String) -> bool {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = r.is_none();
        if first {
            *r = Some(why);
        }
        first
    }

    /// Forgets the removal (the node was added back).
    pub fn clear(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// When each refusal of a peer that lost its data (by node and the
/// incarnation it reported) was last logged, so it is logged once and then
/// at most every [`LOST_DATA_REPORT_EVERY`].
#[derive(Clone, Default)]
struct LostDataReports {
    inner: Arc<Mutex<HashMap<(NodeId, String), std::time::Instant>>>,
}

impl LostDataReports {
    /// Whether to log the refusal by `node` with `incarnation` now.
    fn due(&self, node: NodeId, incarnation: &str) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (node, incarnation.to_string());
        match map.get(&key) {
            Some(at) if at.elapsed() < LOST_DATA_REPORT_EVERY => false,
            _ => {
                map.insert(key, std::time::Instant::now());
                true
            }
        }
    }
}

/// A pool of gRPC channels to peers, keyed by address. Shared by the Raft
/// network and by request forwarding. With peer mTLS, every channel
/// presents this node's peer certificate and checks the other node's
/// against the cluster CA; when the certificate files are reloaded, new
/// channels are made with the new ones.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, (u64, Channel)>>>,
    tls: Option<Arc<TlsSource>>,
}

impl Channels {
    /// Channels that use peer mTLS from `tls` (`None`: plaintext).
    pub fn with_tls(tls: Option<Arc<TlsSource>>) -> Self {
        Channels {
            inner: Arc::default(),
            tls,
        }
    }

    /// An endpoint for `addr` (`HOST:PORT` or a URI) with this node's peer
    /// TLS settings, not connected yet.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        self.endpoint_with(addr).map(|(_, e)| e)
    }

    fn endpoint_with(&self, addr: &str) -> Result<(u64, Endpoint), tonic::transport::Error> {
        let host_port = addr.split_once("://").map(|(_, a)| a).unwrap_or(addr);
        match &self.tls {
            None => {
                let uri = if addr.contains("://") {
                    addr.to_string()
                } else {
                    format!("http://{addr}")
                };
                Ok((0, Endpoint::from_shared(uri)?))
            }
            Some(tls) => {
                let (generation, config) = tls.client_config();
                let endpoint =
                    Endpoint::from_shared(format!("https://{host_port}"))?.tls_config(config)?;
                Ok((generation, endpoint))
            }
        }
    }

    /// The channel to `addr` (`HOST:PORT` or a URI), created on first use
    /// (and again after the peer certificate files were reloaded).
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let generation = self.tls.as_ref().map(|t| t.generation()).unwrap_or(0);
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((made, ch)) = map.get(addr) {
            if *made == generation {
                return Ok(ch.clone());
            }
        }
        let (generation, endpoint) = self.endpoint_with(addr)?;
        let ch = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            // Notice a dead peer (or leader) within about two seconds.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(addr.to_string(), (generation, ch.clone()));
        Ok(ch)
    }
}

/// An error of a call to another node, with its causes, and a hint when it
/// looks like TLS set up differently on the two nodes.
pub fn describe_peer_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    if let Some(hint) = crate::tls::peer_connection_hint(&text) {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// The incarnation each peer reported in its latest reply, and when.
#[derive(Clone, Default)]
pub struct Observed {
    inner: Arc<Mutex<HashMap<NodeId, (u64, std::time::Instant)>>>,
}

impl Observed {
    /// The incarnation `node` reported within the last `max_age`, if any.
    pub fn recent(&self, node: NodeId, max_age: Duration) -> Option<u64> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .filter(|(_, at)| at.elapsed() <= max_age)
            .map(|(inc, _)| *inc)
    }

    fn set(&self, node: NodeId, incarnation: u64) {
        if incarnation != 0 {
            self.inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node, (incarnation, std::time::Instant::now()));
        }
    }
}

/// Creates a [`PeerClient`] for each peer openraft replicates to.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
    keyspace: Keyspace,
    observed: Observed,
    transfer: SnapshotTransfer,
    removal: Removal,
    lost_data: LostDataReports,
    node_id: NodeId,
    cluster_id: ClusterId,
}

impl Network {
    /// A network that dials peers through `channels`, tells each peer the
    /// incarnation `keyspace` has on record for it, and notes in `observed`
    /// the incarnation each peer reports.
    pub fn new(channels: Channels, keyspace: Keyspace, observed: Observed) -> Self {
        Network {
            channels,
            keyspace,
            observed,
            transfer: SnapshotTransfer::default(),
            removal: Removal::default(),
            lost_data: LostDataReports::default(),
            node_id: 0,
            cluster_id: ClusterId::default(),
        }
    }

    /// Names this node (`node_id`, of cluster `cluster_id`) in every
    /// message.
    pub fn with_identity(mut self, node_id: NodeId, cluster_id: ClusterId) -> Self {
        self.node_id = node_id;
        self.cluster_id = cluster_id;
        self
    }

    /// Records in `removal` a leader's answer that this node is no longer
    /// a member.
    pub fn with_removal(mut self, removal: Removal) -> Self {
        self.removal = removal;
        self
    }

    /// Sends snapshots as `transfer` says.
    pub fn with_snapshot_transfer(mut self, transfer: SnapshotTransfer) -> Self {
        self.transfer = transfer;
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            keyspace: self.keyspace.clone(),
            observed: self.observed.clone(),
            transfer: self.transfer,
            removal: self.removal.clone(),
            lost_data: self.lost_data.clone(),
            refused: std::sync::atomic::AtomicBool::new(false),
            sender: self.node_id,
            cluster_id: self.cluster_id.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    channels: Channels,
    keyspace: Keyspace,
    observed: Observed,
    transfer: SnapshotTransfer,
    removal: Removal,
    lost_data: LostDataReports,
    /// The peer refused messages because it lost its data, or belongs to
    /// another cluster: back off long.
    refused: std::sync::atomic::AtomicBool,
    /// This node's id.
    sender: NodeId,
    /// This node's cluster id.
    cluster_id: ClusterId,
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, Unreachable<TypeConfig>> {
        let ch = self
            .channels
            .get(&self.addr)
            .map_err(|e| Unreachable::new(&e))?;
        Ok(RaftPeerClient::new(ch)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    fn request<T: serde::Serialize>(
        &self,
        msg: &T,
        timeout: Duration,
    ) -> Result<tonic::Request<RaftPayload>, RPCError<TypeConfig>> {
        let payload = bincode_encode(msg).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = tonic::Request::new(RaftPayload {
            target: self.target,
            payload,
            incarnation: self.expected_incarnation(),
            cluster_id: self.cluster_id.wire(),
            sender: self.sender,
        });
        req.set_timeout(timeout);
        Ok(req)
    }

    /// Sends one unary Raft RPC: encodes `msg`, calls `rpc` on the peer
    /// within the RPC's soft deadline, and decodes the reply.
    async fn call<Req, Resp, F, Fut>(
        &self,
        msg: &Req,
        option: RPCOption,
        rpc: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let req = self.request(msg, option.soft_ttl())?;
        let resp = rpc(self.client()?, req)
            .await
            .map_err(|s| self.refusal(s))?;
        self.refused
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.decode_reply(resp)
    }

    /// Maps a failed RPC to openraft's error, acting on the two refusals
    /// this node must understand: the peer lost its data (logged here at a
    /// low rate; openraft backs off), or the leader says this node is no
    /// longer a member.
    fn refusal(&self, s: tonic::Status) -> RPCError<TypeConfig> {
        if s.metadata().contains_key(FOREIGN_CLUSTER_KEY) {
            let theirs = s
                .metadata()
                .get(CLUSTER_ID_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string();
            return self.stranger(&theirs, s.message());
        }
        if s.metadata().contains_key(REMOVED_KEY) {
            if self.removal.set(s.message().to_string()) {
                tracing::debug!(from = self.target, "told that this node was removed");
            }
            let e = io::Error::other(format!("node {} refused: {}", self.target, s.message()));
            return RPCError::Unreachable(Unreachable::new(&e));
        }
        if s.metadata().contains_key(LOST_DATA_KEY) {
            self.refused
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let incarnation = s
                .metadata()
                .get(INCARNATION_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string();
            if self.lost_data.due(self.target, &incarnation) {
                tracing::warn!(
                    node = self.target,
                    incarnation = %incarnation,
                    "node {} refuses the log: {} (logged once per node and incarnation, then at \
                     most every {}s)",
                    self.target,
                    s.message(),
                    LOST_DATA_REPORT_EVERY.as_secs()
                );
            }
            let e = io::Error::other(format!(
                "node {} lost its data; replace it (README: Replacing a node)",
                self.target
            ));
            return RPCError::Unreachable(Unreachable::new(&e));
        }
        status_to_rpc_error(s)
    }

    /// The target belongs to cluster `theirs`, not this node's: logged once
    /// per node and cluster id, then at most every minute, counted, and
    /// backed off from. `detail` is the peer's own refusal, if it sent one.
    fn stranger(&self, theirs: &str, detail: &str) -> RPCError<TypeConfig> {
        self.refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::CLUSTER_ID_MISMATCHES
            .with_label_values(&["outgoing"])
            .inc();
        let ours = self
            .cluster_id
            .get()
            .map(format_id)
            .unwrap_or_else(|| "?".into());
        let summary = format!(
            "node {} at {} belongs to cluster {theirs}, this node (node {}) to cluster {ours}: \
             a reused address or a data directory from another cluster?",
            self.target, self.addr, self.sender
        );
        if self
            .lost_data
            .due(self.target, &format!("cluster {theirs}"))
        {
            tracing::warn!(
                node = self.target,
                addr = %self.addr,
                their_cluster = %theirs,
                our_cluster = %ours,
                "{summary} It is sent nothing but an occasional retry until it answers as a \
                 member of cluster {ours}: check which process listens at {} and which data \
                 directory it runs on (README: Cluster identity). Its answer: {detail} (logged \
                 once per node and cluster, then at most every {}s)",
                self.addr,
                LOST_DATA_REPORT_EVERY.as_secs()
            );
        }
        let e = io::Error::other(summary);
        RPCError::Unreachable(Unreachable::new(&e))
    }

    /// The incarnation the cluster has on record for the target (0: none).
    fn expected_incarnation(&self) -> u64 {
        self.keyspace
            .member_incarnation(self.target)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn decode_reply<T: serde::de::DeserializeOwned>(
        &self,
        r: tonic::Response<RaftPayload>,
    ) -> Result<T, RPCError<TypeConfig>> {
        let r = r.into_inner();
        // A peer that does not check (an older version) but answers as a
        // member of another cluster is a stranger all the same.
        if !admits(self.cluster_id.get(), r.cluster_id) {
            return Err(self.stranger(&format_id(r.cluster_id), "(its reply named its cluster)"));
        }
        self.observed.set(self.target, r.incarnation);
        bincode_decode(&r.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// Maps a gRPC failure to what openraft should do about it: back off from
/// an unreachable peer, or retry after a plain network error.
fn status_to_rpc_error(s: tonic::Status) -> RPCError<TypeConfig> {
    let described = describe_peer_error(&s);
    let hinted = crate::tls::peer_connection_hint(&described).is_some();
    match s.code() {
        _ if hinted => RPCError::Unreachable(Unreachable::new(&io::Error::other(described))),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = std::fs::File;

    /// After a peer refused messages because it lost its data, wait longer
    /// and longer (1 s doubling to 30 s) before trying it again: it will
    /// not accept the log until it is replaced.
    fn backoff(&self) -> Option<openraft::network::Backoff> {
        if !self.refused.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let delays = std::iter::successors(Some(Duration::from_secs(1)), |d| {
            Some((*d * 2).min(Duration::from_secs(30)))
        });
        Some(openraft::network::Backoff::new(delays))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &rpc,
            option,
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option, |mut c, r| async move { c.pre_vote(r).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, std::fs::File>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = bincode_encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let target = self.target;
        let incarnation = self.expected_incarnation();
        let cluster_id = self.cluster_id.wire();
        let sender = self.sender;
        let mut file = tokio::fs::File::from_std(snapshot.snapshot);
        let total = tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::End(0))
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::Start(0))
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // Stream the file in chunks. A read error is reported, not taken for
        // the end of the file: the stream then stalls, the call is dropped
        // (resetting the stream), and the error is returned. The receiver
        // also verifies the file's checksum before installing anything.
        //
        // There is no limit on the whole transfer, only on progress: the
        // receiver must accept a chunk within the stall timeout, and answer
        // within a time that grows with the size once all are sent.
        let progress = Arc::new(Progress::default());
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<io::Error>();
        let sent = progress.clone();
        let rate = self.transfer.rate;
        // With a rate limit, chunks leave at most every CHUNK/rate: never
        // take that pacing for a stall.
        let pacing = rate
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs_f64(SNAPSHOT_CHUNK_BYTES as f64 / r as f64))
            .unwrap_or_default();
        let stall_timeout = self.transfer.stall_timeout.max(pacing * 3);
        let began = tokio::time::Instant::now();
        let chunks = futures::stream::unfold(
            (file, Some(header), Some(failed_tx)),
            move |(mut file, header, mut failed)| {
                let sent = sent.clone();
                async move {
                    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                    let n = match file.read(&mut buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            if let Some(tx) = failed.take() {
                                let _ = tx.send(e);
                            }
                            return futures::future::pending().await;
                        }
                    };
                    if n == 0 && header.is_none() {
                        sent.finish();
                        return None;
                    }
                    buf.truncate(n);
                    if let Some(rate) = rate.filter(|r| *r > 0) {
                        // Not ahead of the allowed rate: the bytes sent so
                        // far may not leave before their share of time.
                        let due = Duration::from_secs_f64(sent.bytes() as f64 / rate as f64);
                        tokio::time::sleep_until(began + due).await;
                    }
                    sent.advance(n as u64);
                    let chunk = SnapshotChunk {
                        target,
                        incarnation,
                        cluster_id,
                        sender,
                        header: header.unwrap_or_default(),
                        data: buf,
                    };
                    Some((chunk, (file, None, failed)))
                }
            },
        );
        let mut client = self.client()?;
        let send = client.install_snapshot(tonic::Request::new(chunks));
        tokio::pin!(send);
        // Fused: once the stream is done its sender is dropped, and the
        // receiver must then stay pending instead of being polled again.
        let mut failed_rx = futures::FutureExt::fuse(failed_rx);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let mut last_log = started;
        let cancel = cancel;
        tokio::pin!(cancel);
        tracing::info!(
            to = target,
            last_log_id = ?snapshot.meta.last_log_id,
            mib = total as f64 / (1 << 20) as f64,
            "sending snapshot"
        );
        let resp = loop {
            tokio::select! {
                r = &mut send => break r.map_err(|s| {
                    tracing::warn!(
                        error = %s,
                        "snapshot transfer to node {target} failed after {} bytes",
                        progress.state().0
                    );
                    match status_to_rpc_error(s) {
                        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                        other => StreamingError::Network(NetworkError::new(&other)),
                    }
                })?,
                Ok(e) = &mut failed_rx => {
                    tracing::warn!(error = %e, "reading the snapshot to send failed");
                    let e = io::Error::new(e.kind(), format!("reading the snapshot to send: {e}"));
                    return Err(StreamingError::Network(NetworkError::new(&e)));
                }
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                _ = tick.tick() => {
                    let (bytes, finished, idle) = progress.state();
                    let allowed = if finished {
                        stall_timeout + Duration::from_secs(total / SNAPSHOT_LOAD_BYTES_PER_SEC)
                    } else {
                        stall_timeout
                    };
                    if idle > allowed {
                        let e = io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "snapshot transfer to node {target} stalled: no progress for \
                                 {idle:?} after {bytes} of {total} bytes"
                            ),
                        );
                        tracing::warn!(error = %e, "abandoning the snapshot transfer");
                        return Err(StreamingError::Network(NetworkError::new(&e)));
                    }
                    if last_log.elapsed() >= SNAPSHOT_PROGRESS_EVERY {
                        last_log = tokio::time::Instant::now();
                        tracing::info!(
                            to = target,
                            sent_mib = bytes as f64 / (1 << 20) as f64,
                            total_mib = total as f64 / (1 << 20) as f64,
                            waiting_for_install = finished,
                            elapsed_s = started.elapsed().as_secs(),
                            "snapshot transfer in progress"
                        );
                    }
                }
            }
        };
        let _ = option;
        tracing::info!(
            to = target,
            mib = total as f64 / (1 << 20) as f64,
            secs = started.elapsed().as_secs_f64(),
            "snapshot sent and installed"
        );
        self.decode_reply(resp).map_err(|e| match e {
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::new(&other)),
        })
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, option, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }
}

/// How far a snapshot transfer has come, shared between the stream that
/// produces the chunks and the task that watches for stalls.
#[derive(Default)]
struct Progress {
    inner: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    bytes: u64,
    finished: bool,
    last: Option<std::time::Instant>,
}

impl Progress {
    fn advance(&self, n: u64) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.bytes += n;
        p.last = Some(std::time::Instant::now());
    }

    fn bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    fn finish(&self) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.finished = true;
        p.last = Some(std::time::Instant::now());
    }

    /// Bytes handed to the transport, whether all were, and how long since
    /// the last progress (counted from the first check if none yet).
    fn state(&self) -> (u64, bool, Duration) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let last = *p.last.get_or_insert_with(std::time::Instant::now);
        (p.bytes, p.finished, last.elapsed())
    }
}

/// Decodes the header of the first snapshot chunk.
pub fn decode_snapshot_header(header: &[u8]) -> io::Result<(Vote, SnapshotMeta)> {
    bincode_decode(header)
}
