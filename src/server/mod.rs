//! Running a node: open storage, start Raft, serve the client port and the
//! peer port, bootstrap the cluster on first start, purge expired values,
//! report health, and shut down gracefully.
//!
//! - [`node`]: request routing (serve on the leader or relay to it);
//! - [`clock`]: this node's prediction of the cluster time, for its stamps;
//! - [`peer`]: the services on the peer port (Raft RPCs, admin);
//! - [`metrics_http`]: Prometheus metrics and the HTTP probes;
//! - [`expiry`]: the purger that turns expired values into log entries;
//! - [`read_index`]: followers' batched questions to the leader for reads;
//! - [`registrar`]: records each member's data-directory incarnation;
//! - [`vote_guard`]: keeps a node that just started out of elections;
//! - [`removal`]: a node that was removed learns it and stops serving;
//! - [`bootstrap`]: forms the cluster on its very first start;
//! - [`cluster_check`]: refuses peer calls from nodes of another cluster.

pub mod bootstrap;
pub mod clock;
pub mod cluster_check;
pub mod expiry;
pub mod metrics_http;
pub mod node;
pub mod peer;
pub mod read_index;
pub mod registrar;
pub mod removal;
pub mod vote_guard;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use openraft::async_runtime::WatchReceiver;
use openraft::SnapshotPolicy;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::api::admission::{Admission, AdmissionLayer, CLIENT_PREFIX, RELAYED_PREFIX};
use crate::api::content_type::RequireGrpc;
use crate::api::service::EventStoreService;
use crate::config::{DefaultTtls, ExpirySettings, Limits, RaftSettings};
use crate::proto::peer::admin_server::AdminServer;
use crate::proto::peer::forward_server::ForwardServer;
use crate::proto::peer::raft_peer_server::RaftPeerServer;
use crate::proto::protob::event_store_server::EventStoreServer;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Channels, Network, Observed, Removal, SnapshotTransfer};
use crate::raft::types::{NodeId, Raft};
use crate::store::{Keyspace, StateMachine};
use crate::tls::{TlsFiles, TlsSource};
use node::Node;
use vote_guard::VoteGuard;

/// A gRPC server running on plaintext or TLS connections.
type ServerFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// How long a node stopping on SIGTERM waits for open connections to finish.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How long a node whose Raft core failed waits for open connections: no
/// request can succeed any more, and every in-flight one has its error
/// answer within milliseconds, so idle connections must not hold up the
/// exit that lets the supervisor restart the node.
const FATAL_DRAIN_TIME: Duration = Duration::from_millis(300);

/// Everything needed to run one node.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Client gRPC address to bind.
    pub listen: SocketAddr,
    /// Peer gRPC address to bind.
    pub peer_listen: SocketAddr,
    /// HTTP address for metrics and probes to bind (`None`: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// The most client requests served at once (see [`Admission`]).
    pub max_in_flight: usize,
    /// The most bytes of request payload held at once.
    pub max_in_flight_bytes: usize,
    /// RocksDB's block cache, shared by all column families.
    pub cache_bytes: usize,
    /// Initial voters: id -> peer address (`HOST:PORT`). Must contain `node_id`.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the database and snapshots live.
    pub data_dir: PathBuf,
    /// Client input limits.
    pub limits: Limits,
    /// Per-scope default TTLs.
    pub default_ttls: DefaultTtls,
    /// Raft timing and compaction.
    pub raft: RaftSettings,
    /// Expiry purging.
    pub expiry: ExpirySettings,
    /// Deadline for requests that carry none.
    pub request_timeout: Duration,
    /// TLS on the client port (`None`: plaintext).
    pub tls: Option<TlsFiles>,
    /// mTLS on the peer port, both directions (`None`: plaintext).
    pub peer_tls: Option<TlsFiles>,
    /// How often the TLS files are re-read.
    pub tls_reload_every: Duration,
}

fn raft_config(s: &RaftSettings) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "eventstore".into(),
        heartbeat_interval: s.heartbeat_interval.as_millis() as u64,
        election_timeout_min: s.election_timeout_min.as_millis() as u64,
        election_timeout_max: s.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(s.snapshot_every),
        max_in_snapshot_log_to_keep: s.keep_behind_snapshot,
        // The transfer itself is bounded by progress, not by total time
        // (see `raft::network::SnapshotTransfer`), so large snapshots
        // complete; openraft only passes this value to the network.
        install_snapshot_timeout: 3_600_000,
        // A node back from a partition first asks whether it could win, so
        // it does not force an election on a healthy leader.
        enable_pre_vote: Some(true),
        // A node that just started stays out of elections until its vote
        // guard has passed (see `vote_guard`).
        enable_elect: false,
        // Replicate entries as soon as they are written, while the log's
        // fsync thread syncs them (see `raft::log_store`): the leader's and
        // the followers' fsyncs overlap.
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    };
    config.validate().context("invalid Raft settings")
}

/// Runs a node until `shutdown` resolves, then stops it gracefully: a
/// leader first hands leadership to a caught-up voter, in-flight requests
/// finish, Raft stops, and the database is closed.
pub async fn run(cfg: ServeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let vote_guard = VoteGuard::new(Instant::now(), cfg.raft.election_timeout_max);
    let Some(own_addr) = cfg.peers.get(&cfg.node_id).cloned() else {
        bail!(
            "--peers does not list this node's id {} (it lists {:?})",
            cfg.node_id,
            cfg.peers.keys().collect::<Vec<_>>()
        );
    };
    // Check everything that can be checked, and bind the ports, before
    // creating anything: a refused start leaves the data directory as it
    // was, and a busy port fails fast.
    let raft_config = Arc::new(raft_config(&cfg.raft)?);
    let client_tls = match &cfg.tls {
        Some(files) => Some(
            TlsSource::load(crate::tls::Port::Client, files.clone())
                .context("TLS on the client port")?,
        ),
        None => None,
    };
    let peer_tls = match &cfg.peer_tls {
        Some(files) => Some(
            TlsSource::load(crate::tls::Port::Peer, files.clone())
                .context("mTLS on the peer port")?,
        ),
        None => None,
    };
    let client_listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the client port {}", cfg.listen))?;
    let peer_listener = tokio::net::TcpListener::bind(cfg.peer_listen)
        .await
        .with_context(|| format!("binding the peer port {}", cfg.peer_listen))?;
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding the metrics port {addr} (--metrics-listen; `off` disables it)")
        })?),
        None => None,
    };
    // A damaged data directory is refused before anything is written to
    // it: it is opened read-only first, and every record the node reads at
    // start is checked, so that it is left exactly as it was found.
    let db_path = cfg.data_dir.join("db");
    let corrupt = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "the data directory {} is corrupt: {e}. This node does not start on it and leaves it \
             as it is; move it aside and replace the node (README: Replacing a node)",
            cfg.data_dir.display()
        )
    };
    crate::store::db::inspect(&db_path, |db| {
        let damaged = |e: std::io::Error| crate::store::db::OpenError::Damaged(e.to_string());
        let log = LogStore::new(db.clone());
        log.verify().map_err(damaged)?;
        crate::store::state_machine::verify(&Keyspace::new(db.clone())).map_err(damaged)?;
        // The identity is the first record a node writes. Data files
        // without it are what a MANIFEST that lost its records leaves:
        // opened for writing, the database would look new and the files
        // would be deleted as obsolete.
        let tables = crate::store::db::table_files(&db_path);
        if tables > 0 && !log.has_identity().map_err(damaged)? {
            return Err(crate::store::db::OpenError::Damaged(format!(
                "the database directory holds {tables} data (SST) files, but the database they \
                 make up holds none of this node's records, not even its identity: the MANIFEST \
                 has lost track of them"
            )));
        }
        Ok(())
    })
    .map_err(|e| {
        if e.is_corruption() {
            corrupt(&e)
        } else {
            anyhow::anyhow!("opening the database in {}: {e}", cfg.data_dir.display())
        }
    })?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let db = crate::store::db::open_sized(&db_path, cfg.cache_bytes).map_err(|e| {
        if e.kind() == rocksdb::ErrorKind::Corruption {
            corrupt(&e)
        } else {
            anyhow::anyhow!("opening the database in {}: {e}", cfg.data_dir.display())
        }
    })?;
    let cluster_id = crate::store::ClusterId::load(db.clone())
        .map_err(|e| corrupt(&format!("reading the cluster id: {e}")))?;
    let keyspace = Keyspace::new(db.clone());
    let snapshot_dir = cfg.data_dir.join("snapshots");
    let timeline = Arc::new(clock::Timeline::new(cfg.node_id));
    let state_machine = {
        let timeline = timeline.clone();
        StateMachine::open(keyspace.clone(), snapshot_dir.clone())
            .context("opening the state machine")?
            .observe_clock(Arc::new(move |seen: crate::store::ClockSeen| {
                timeline.observe(seen, std::time::Instant::now())
            }))
            .with_cluster_id(cluster_id.clone())
            .context("adopting the cluster id of the replicated state")?
    };
    let log_store = LogStore::new(db.clone());
    {
        use openraft::storage::RaftLogStorage;
        let last = log_store
            .clone()
            .get_log_state()
            .await
            .context("reading the Raft log")?
            .last_log_id
            .map(|l| l.index);
        timeline.set_replayed_through(last);
    }
    let had_state = log_store.has_state().context("reading the Raft log")?;
    let incarnation = log_store
        .identity(cfg.node_id)
        .context("reading this data directory's identity")?;

    let channels = Channels::with_tls(peer_tls.clone());
    let observed = Observed::default();
    let removal = Removal::default();
    let raft = Raft::new(
        cfg.node_id,
        raft_config,
        Network::new(channels.clone(), keyspace.clone(), observed.clone())
            .with_snapshot_transfer(SnapshotTransfer {
                stall_timeout: cfg.raft.snapshot_stall_timeout,
                rate: cfg.raft.snapshot_send_rate,
            })
            .with_removal(removal.clone())
            .with_identity(cfg.node_id, cluster_id.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;

    let (read_index_queue, read_index_rounds) = read_index::queue();
    let node = Arc::new(Node {
        id: cfg.node_id,
        incarnation,
        cluster_id: cluster_id.clone(),
        observed,
        raft: raft.clone(),
        keyspace,
        limits: cfg.limits.clone(),
        default_ttls: cfg.default_ttls.clone(),
        expiry: cfg.expiry.clone(),
        channels,
        default_timeout: cfg.request_timeout,
        read_lease: cfg.raft.election_timeout_max * 4 / 5,
        timeline,
        expiry_tick: tokio::sync::Mutex::new(()),
        lease: cfg.raft.election_timeout_max,
        leader_contact: std::sync::Mutex::new(None),
        removal,
        read_index: read_index_queue,
        transfer_term: Default::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    // Reflection on each port lists what that port serves, and nothing else.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("protob.EventStore")
        .with_service_name("grpc.health.v1.Health")
        .build_v1()
        .context("building the reflection service")?;
    let peer_reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .with_service_name("eventstore.peer.RaftPeer")
        .with_service_name("eventstore.peer.Forward")
        .with_service_name("eventstore.peer.Admin")
        .build_v1()
        .context("building the reflection service")?;

    // Values a little over the limit reach validation and get RESOURCE_EXHAUSTED
    // with the limit named; far larger messages are refused by the transport
    // (OUT_OF_RANGE) before they are buffered.
    let max_msg = cfg.limits.max_value_bytes.saturating_add(4 << 20);
    let admission = Arc::new(Admission::new(cfg.max_in_flight, cfg.max_in_flight_bytes));
    let client_server = {
        let mut stop = stop_rx.clone();
        let router = tonic::transport::Server::builder()
            .layer(AdmissionLayer::new(admission.clone(), &[CLIENT_PREFIX]))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(RequireGrpc(
                EventStoreServer::new(EventStoreService::new(node.clone(), admission.clone()))
                    .max_decoding_message_size(max_msg)
                    .max_encoding_message_size(max_msg),
            ));
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let served: ServerFuture = match &client_tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                crate::tls::incoming(client_listener, tls.clone(), stop_rx.clone()),
                stopped,
            )),
            None => {
                Box::pin(router.serve_with_incoming_shutdown(incoming(client_listener), stopped))
            }
        };
        served
    };
    // Only a node that started with an empty data directory adopts the
    // cluster id of the first leader that replicates to it; one with data
    // but no id (an older version) adopts the id it applies.
    let peer = peer::PeerService::new(node.clone(), snapshot_dir, vote_guard)
        .adopting_cluster_id(!had_state);
    let peer_server = {
        let mut stop = stop_rx.clone();
        let router = tonic::transport::Server::builder()
            .layer(AdmissionLayer::new(admission.clone(), &[RELAYED_PREFIX]))
            .layer(cluster_check::ClusterCheckLayer::new(
                cfg.node_id,
                cluster_id.clone(),
            ))
            .add_service(
                RaftPeerServer::new(peer.clone())
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                ForwardServer::new(EventStoreService::relayed(node.clone(), admission.clone()))
                    .max_decoding_message_size(max_msg)
                    .max_encoding_message_size(max_msg),
            )
            .add_service(AdminServer::new(peer))
            .add_service(peer_reflection);
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let served: ServerFuture = match &peer_tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                crate::tls::incoming(peer_listener, tls.clone(), stop_rx.clone()),
                stopped,
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(incoming(peer_listener), stopped)),
        };
        served
    };
    let client_task = tokio::spawn(client_server);
    let peer_task = tokio::spawn(peer_server);
    tracing::info!(
        node_id = cfg.node_id,
        listen = %cfg.listen,
        peer_listen = %cfg.peer_listen,
        data_dir = %cfg.data_dir.display(),
        client_tls = match (&cfg.tls, cfg.tls.as_ref().and_then(|t| t.ca.as_ref())) {
            (None, _) => "off",
            (Some(_), None) => "TLS",
            (Some(_), Some(_)) => "mTLS",
        },
        peer_tls = if cfg.peer_tls.is_some() { "mTLS" } else { "off" },
        "eventstore node started"
    );
    let tls_watcher = tokio::spawn(crate::tls::watch_files(
        client_tls.iter().chain(peer_tls.iter()).cloned().collect(),
        cfg.tls_reload_every,
        stop_rx.clone(),
    ));

    let bootstrapper = tokio::spawn(bootstrap::run(
        raft.clone(),
        cluster_id,
        cfg.clone(),
        had_state,
        own_addr,
        node.channels.clone(),
        stop_rx.clone(),
    ));
    let elections = tokio::spawn(vote_guard::release_elections(
        raft.clone(),
        cfg.node_id,
        vote_guard,
        node.removal.clone(),
        stop_rx.clone(),
    ));
    let removal_task = tokio::spawn(removal::watch_removal(
        node.clone(),
        vote_guard,
        stop_rx.clone(),
    ));
    let purger = tokio::spawn(expiry::run_purger(node.clone(), stop_rx.clone()));
    let read_index_rounds = tokio::spawn(read_index::run(
        read_index_rounds,
        Arc::downgrade(&node),
        stop_rx.clone(),
    ));
    let registrar = tokio::spawn(registrar::run_registrar(node.clone(), stop_rx.clone()));
    let (ready_tx, ready_rx) = watch::channel(false);
    let health_task = tokio::spawn(report_health(
        node.clone(),
        health,
        ready_tx,
        stop_rx.clone(),
    ));
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(metrics_http::serve(
            listener,
            node.clone(),
            ready_rx,
            stop_rx.clone(),
        ))
    });

    // A node whose Raft core stopped (a fatal storage error) cannot serve
    // or vote any more: it exits with an error, so that its supervisor
    // (Kubernetes, systemd, compose) restarts it, instead of lingering with
    // open ports that look alive.
    let fatal = tokio::select! {
        _ = shutdown => None,
        e = raft_stopped(raft.clone()) => Some(e),
    };
    match &fatal {
        None => {
            tracing::info!("shutting down");
            hand_over_leadership(&node).await;
        }
        Some(e) => tracing::error!(
            error = %e,
            "the Raft core stopped after a fatal error; exiting so that the node is restarted"
        ),
    }
    let _ = stop_tx.send(true);
    // In-flight requests finish; connections that stay open longer than
    // the drain time (idle clients that ignore GOAWAY) are cut.
    let drain = if fatal.is_some() {
        FATAL_DRAIN_TIME
    } else {
        DRAIN_TIME
    };
    for (name, task) in [("client server", client_task), ("peer server", peer_task)] {
        let abort = task.abort_handle();
        match tokio::time::timeout(drain, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "{name} stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "{name} task failed"),
            Err(_) => {
                tracing::warn!("{name}: connections still open after {drain:?}; closing them");
                abort.abort();
            }
        }
    }
    let _ = bootstrapper.await;
    let _ = elections.await;
    let _ = purger.await;
    let _ = read_index_rounds.await;
    let _ = registrar.await;
    let _ = health_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let _ = removal_task.await;
    let _ = tls_watcher.await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "Raft did not shut down cleanly");
    }
    drop(node);
    drop(raft);
    // Make sure everything applied is on disk before the process exits.
    if let Err(e) = db.flush_wal(true) {
        tracing::warn!(error = %e, "flushing the database failed");
    }
    if let Some(e) = fatal {
        bail!("the Raft core stopped after a fatal error: {e}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves with the reason once openraft's core stops on its own.
async fn raft_stopped(raft: Raft) -> String {
    let mut rx = raft.metrics();
    loop {
        if let Err(e) = &rx.borrow_watched().running_state {
            return e.to_string();
        }
        if rx.changed().await.is_err() {
            return "the Raft core exited".into();
        }
    }
}

/// On a leader that is stopping, hands leadership to the most caught-up
/// voter and waits briefly for it to take over, so clients see at most a
/// short pause instead of an election timeout.
async fn hand_over_leadership(node: &Node) {
    let metrics = node.raft.metrics().borrow_watched().clone();
    if metrics.current_leader != Some(node.id) {
        return;
    }
    let voters: Vec<NodeId> = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != node.id)
        .collect();
    let best = voters.iter().copied().max_by_key(|v| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(v).cloned().flatten())
            .map(|l| l.index)
    });
    let Some(to) = best else { return };
    tracing::info!(to, "handing leadership over before shutting down");
    if node.transfer_leadership(to).await.is_err() {
        return;
    }
    let mut rx = node.raft.metrics();
    let handed_over = async {
        loop {
            let leader = rx.borrow_watched().current_leader;
            if leader.is_some() && leader != Some(node.id) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), handed_over).await;
}

/// How often health is re-evaluated (a lease lapses without any change
/// being reported, so a timer, not Raft's changes, drives it).
const HEALTH_EVERY: Duration = Duration::from_millis(50);

/// Keeps the gRPC health status (and `/readyz`, through `ready`) current: SERVING while this node can serve
/// requests: it knows the leader and its address, has applied everything
/// it knows to be committed, is a member, and is in touch with a quorum.
/// As leader that means a quorum acknowledged it within its read lease; as
/// follower or learner, the leader reached it within the lease.
async fn report_health(
    node: Arc<Node>,
    health: tonic_health::server::HealthReporter,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let rx = node.raft.metrics();
    let mut last: Option<ServingStatus> = None;
    loop {
        let verdict = node.serving(&rx.borrow_watched());
        let status = match &verdict {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            match &verdict {
                Ok(()) => tracing::info!("health: SERVING"),
                Err(why) if last.is_some() => tracing::info!("health: NOT_SERVING: {why}"),
                Err(_) => {}
            }
            health.set_service_status("", status).await;
            health.set_service_status("protob.EventStore", status).await;
            ready.send_replace(status == ServingStatus::Serving);
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The plaintext connections a gRPC port accepts on `listener`, with
/// Nagle's algorithm off (`TCP_NODELAY`): an answer goes out as soon as it
/// is written, instead of waiting for the peer's delayed ACK. A TLS port
/// accepts through [`crate::tls::incoming`], which does the same.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    /// Accepted connections have Nagle's algorithm off. With it on, an
    /// answer written in two pieces (HTTP/2 headers, then data) waits for
    /// the client's delayed ACK, about 40 ms, whenever the client has no
    /// request of its own in flight on that connection.
    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "Nagle's algorithm is on");
    }
}
