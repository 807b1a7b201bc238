//! The outgoing half of the peer network: openraft's `RaftNetworkV2` over
//! gRPC to each peer's `RaftPeer` service.
//!
//! One lazily connected tonic channel per peer address, shared by every RPC
//! to that peer (tonic reconnects it with backoff). Peer addresses are host
//! names resolved by DNS on every (re)connect, so a pod that restarts with a
//! new IP is found again. Every message names its target node id; the
//! receiver rejects messages meant for another node.

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
use crate::store::snapshot::{bincode_decode, bincode_encode};
use crate::store::Keyspace;

/// Size of each snapshot chunk sent to a follower.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A pool of gRPC channels to peers, keyed by address. Shared by the Raft
/// network and by request forwarding.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// The channel to `addr` (`HOST:PORT` or a URI), created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ch = Endpoint::from_shared(uri)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            // Notice a dead peer (or leader) within about two seconds.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
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
        }
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
            .map_err(status_to_rpc_error)?;
        self.decode_reply(resp)
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
        self.observed.set(self.target, r.incarnation);
        bincode_decode(&r.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// Maps a gRPC failure to what openraft should do about it: back off from
/// an unreachable peer, or retry after a plain network error.
fn status_to_rpc_error(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = std::fs::File;

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
        let mut file = tokio::fs::File::from_std(snapshot.snapshot);
        tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::Start(0))
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // Stream the file in chunks; a read error ends the stream early and
        // the receiver rejects the incomplete snapshot.
        let chunks =
            futures::stream::unfold((file, Some(header)), move |(mut file, header)| async move {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading snapshot to send failed");
                        return None;
                    }
                };
                if n == 0 && header.is_none() {
                    return None;
                }
                buf.truncate(n);
                let chunk = SnapshotChunk {
                    target,
                    incarnation,
                    header: header.unwrap_or_default(),
                    data: buf,
                };
                Some((chunk, (file, None)))
            });
        let mut req = tonic::Request::new(chunks);
        req.set_timeout(option.hard_ttl());
        let mut client = self.client()?;
        let send = client.install_snapshot(req);
        let resp = tokio::select! {
            r = send => r.map_err(|s| match status_to_rpc_error(s) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::new(&other)),
            })?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
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

/// Decodes the header of the first snapshot chunk.
pub fn decode_snapshot_header(header: &[u8]) -> io::Result<(Vote, SnapshotMeta)> {
    bincode_decode(header)
}
