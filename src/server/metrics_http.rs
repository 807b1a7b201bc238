//! The node's HTTP port (`--metrics-listen`, default `0.0.0.0:9100`):
//! Prometheus metrics on `/metrics`, liveness on `/healthz`, readiness
//! on `/readyz`, and openraft's runtime statistics on `/debug/raft`.
//!
//! Counters and histograms come from [`crate::metrics`], where the request
//! path and storage update them. What describes the node's present state
//! (Raft's term, leader and indexes, replication lag, live keys, the purge
//! lag, the database's size) is read when Prometheus scrapes, so it is
//! never stale. Readiness is the same state the gRPC health service
//! reports, so a Kubernetes readiness probe and a gRPC client agree.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use openraft::async_runtime::WatchReceiver;
use prometheus::core::Collector;
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, TextEncoder};
use tokio::sync::watch;

use super::node::Node;
use crate::metrics;
use crate::raft::types::Raft;
use crate::store::db::{cf, CF_DATA};

/// What the handlers read.
#[derive(Clone)]
struct Probe {
    node: Arc<Node>,
    /// Whether the node serves clients (the gRPC health status).
    ready: watch::Receiver<bool>,
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `/debug/raft` on `listener` until `stop`
/// turns true, and counts leader changes meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    metrics::init();
    let leaders = tokio::spawn(count_leader_changes(node.raft.clone(), stop.clone()));
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/debug/raft", get(raft_stats))
        .with_state(Probe { node, ready });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the metrics port stopped with an error");
    }
    let _ = leaders.await;
}

/// Alive: the process answers and its Raft core runs. A node whose core
/// stopped exits on its own; this catches one that hangs instead.
async fn healthz(State(p): State<Probe>) -> impl IntoResponse {
    let running = p.node.raft.metrics().borrow_watched().running_state.clone();
    match running {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the Raft core stopped: {e}\n"),
        ),
    }
}

/// Ready: the node serves clients, exactly when its gRPC health service
/// says SERVING.
async fn readyz(State(p): State<Probe>) -> impl IntoResponse {
    if *p.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known, not caught up, or no quorum\n",
        )
    }
}

/// openraft's own runtime statistics, for a person profiling the write
/// path: among them, on the leader, how long entries spent in each stage
/// (proposed, received by the core, submitted to the log, persisted,
/// committed, applied) as percentiles, and the sizes of batches.
async fn raft_stats(State(p): State<Probe>) -> impl IntoResponse {
    match p.node.raft.runtime_stats().await {
        Ok(stats) => (StatusCode::OK, format!("{}\n", stats.display().multiline())),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the Raft core stopped: {e}\n"),
        ),
    }
}

async fn scrape(State(p): State<Probe>) -> impl IntoResponse {
    let node = p.node.clone();
    let families = tokio::task::spawn_blocking(move || {
        let mut families = metrics::REGISTRY.gather();
        for gauge in state_gauges(&node) {
            families.extend(gauge.collect());
        }
        families
    })
    .await
    .unwrap_or_default();
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&families, &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            format!("encoding the metrics failed: {e}\n").into_bytes(),
        ),
    }
}

fn gauge(name: &str, help: &str, value: i64) -> Box<dyn Collector> {
    let g = IntGauge::new(name, help).expect("a valid metric name");
    g.set(value);
    Box::new(g)
}

/// A gauge's value for `v` (-1: none).
fn index(v: Option<u64>) -> i64 {
    v.map(|i| i64::try_from(i).unwrap_or(i64::MAX))
        .unwrap_or(-1)
}

/// The node's present state as gauges, read now.
fn state_gauges(node: &Node) -> Vec<Box<dyn Collector>> {
    let m = node.raft.metrics().borrow_watched().clone();
    let last = m.last_log_index;
    let mut out = vec![
        gauge(
            "eventstore_raft_term",
            "This node's current Raft term",
            index(Some(m.current_term)),
        ),
        gauge(
            "eventstore_raft_leader_id",
            "The leader this node knows of (-1: none)",
            index(m.current_leader),
        ),
        gauge(
            "eventstore_raft_is_leader",
            "1 when this node is the leader",
            i64::from(m.current_leader == Some(node.id)),
        ),
        gauge(
            "eventstore_raft_last_log_index",
            "Index of this node's last log entry (-1: none)",
            index(last),
        ),
        gauge(
            "eventstore_raft_committed_index",
            "Highest index this node knows to be committed (-1: none)",
            index(m.local_committed.as_ref().map(|l| l.index)),
        ),
        gauge(
            "eventstore_raft_applied_index",
            "Highest index applied to this node's state machine (-1: none)",
            index(m.last_applied.as_ref().map(|l| l.index)),
        ),
        gauge(
            "eventstore_raft_snapshot_index",
            "Last index covered by this node's snapshot (-1: none)",
            index(m.snapshot.as_ref().map(|l| l.index)),
        ),
        gauge(
            "eventstore_raft_purged_index",
            "Last log index purged behind a snapshot (-1: none)",
            index(m.purged.as_ref().map(|l| l.index)),
        ),
    ];
    // Replication lag per follower, on the leader only.
    let lag = IntGaugeVec::new(
        Opts::new(
            "eventstore_raft_replication_lag_entries",
            "Entries a member is behind the leader's last log index (leader only)",
        ),
        &["member"],
    )
    .expect("a valid metric name");
    if let Some(replication) = m.replication.as_ref().filter(|r| !r.is_empty()) {
        for (member, matched) in replication {
            let behind = last
                .unwrap_or(0)
                .saturating_sub(matched.as_ref().map(|l| l.index).unwrap_or(0));
            lag.with_label_values(&[&member.to_string()])
                .set(i64::try_from(behind).unwrap_or(i64::MAX));
        }
        // A family without samples cannot be encoded: only on a leader.
        out.push(Box::new(lag));
    }

    let db = node.keyspace.db();
    let prop = |name: &str| index(db.property_int_value(name).ok().flatten());
    out.push(gauge(
        "eventstore_db_sst_bytes",
        "Size of the database's SST files on disk",
        prop("rocksdb.total-sst-files-size"),
    ));
    out.push(gauge(
        "eventstore_db_memtable_bytes",
        "Size of the database's memtables",
        prop("rocksdb.cur-size-all-mem-tables"),
    ));
    let keys = index(
        db.property_int_value_cf(cf(db, CF_DATA), "rocksdb.estimate-num-keys")
            .ok()
            .flatten(),
    );
    out.push(gauge(
        "eventstore_keys_estimate",
        "Estimated number of stored records (values and system records), from RocksDB",
        keys,
    ));
    out.push(gauge(
        "eventstore_purge_lag_seconds",
        "Age of the oldest value past its deadline that is not purged yet (0: none)",
        purge_lag_secs(node),
    ));
    out
}

/// How long ago the earliest deadline in the expiry index passed, by this
/// node's clock (0 when it has not passed, or nothing is stored).
fn purge_lag_secs(node: &Node) -> i64 {
    let Ok(earliest) = node.keyspace.earliest_deadlines(1) else {
        return -1;
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match earliest.first() {
        Some(d) if *d < now_ms => i64::try_from((now_ms - d) / 1000).unwrap_or(i64::MAX),
        _ => 0,
    }
}

/// Counts every change to a new known leader.
async fn count_leader_changes(raft: Raft, mut stop: watch::Receiver<bool>) {
    let mut rx = raft.metrics();
    let mut last = rx.borrow_watched().current_leader;
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let now = rx.borrow_watched().current_leader;
        if now.is_some() && now != last {
            metrics::LEADER_CHANGES.inc();
        }
        last = now;
    }
}
