//! The node's Prometheus metrics that its parts update as they work: the
//! request path (requests and latencies), the Raft log store (fsync
//! latency), the state machine (purged values) and the snapshot store
//! (builds and installs).
//!
//! They live in one registry at the bottom of the crate so that every layer
//! can count without importing anything above it. What describes Raft's
//! state (term, leader, indexes, lag) and the database's size is read at
//! scrape time by `server::metrics_http`, which serves the registry on
//! `--metrics-listen`.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

/// Every metric of this process.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Registers `metric`; a name registered twice is a programming error.
fn registered<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once, under a unique name");
    metric
}

fn counter(name: &str, help: &str) -> IntCounter {
    registered(IntCounter::new(name, help).expect("a valid metric name"))
}

/// Buckets from 100 µs to about 26 s, doubling.
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 19).expect("valid buckets")
}

fn histogram(name: &str, help: &str) -> Histogram {
    registered(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(seconds_buckets()))
            .expect("a valid metric name"),
    )
}

/// Client requests answered, by method (save, load, delete), gRPC status
/// code, and whether a client sent it here or a follower relayed it.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "eventstore_requests_total",
                "Client requests answered, by method, gRPC status code and origin (client or relay)",
            ),
            &["method", "code", "via"],
        )
        .expect("a valid metric name"),
    )
});

/// How long requests took to answer, by method and origin.
pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "eventstore_request_duration_seconds",
                "Time to answer a client request, by method and origin (client or relay)",
            )
            .buckets(seconds_buckets()),
            &["method", "via"],
        )
        .expect("a valid metric name"),
    )
});

/// Loads this node, as a follower, served from its own state after a read
/// index (`served`), or relayed to the leader after trying (`relayed`).
pub static FOLLOWER_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "eventstore_follower_reads_total",
                "Loads a follower served from its own state after a read index, or relayed after trying",
            ),
            &["outcome"],
        )
        .expect("a valid metric name"),
    )
});

/// Requests this node relayed to the leader, by method.
pub static RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "eventstore_relayed_requests_total",
                "Requests this node relayed to the leader, by method",
            ),
            &["method"],
        )
        .expect("a valid metric name"),
    )
});

/// Duration of every synced (fsynced) write to the Raft log.
pub static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "eventstore_log_fsync_duration_seconds",
        "Duration of synced writes to the Raft log: appends, votes, truncations, purges",
    )
});

/// Expired values removed by applied Purge entries.
pub static PURGED_VALUES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "eventstore_purged_values_total",
        "Expired values removed by Purge entries applied on this node",
    )
});

/// Snapshots this node built.
pub static SNAPSHOT_BUILDS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "eventstore_snapshot_builds_total",
        "Snapshots this node built",
    )
});

/// How long building a snapshot took.
pub static SNAPSHOT_BUILD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "eventstore_snapshot_build_duration_seconds",
        "Time to build a snapshot",
    )
});

/// Snapshots from the leader this node installed.
pub static SNAPSHOT_INSTALLS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "eventstore_snapshot_installs_total",
        "Snapshots received from the leader and installed",
    )
});

/// How long installing a snapshot took.
pub static SNAPSHOT_INSTALL_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "eventstore_snapshot_install_duration_seconds",
        "Time to install a snapshot received from the leader",
    )
});

/// Size of the current snapshot file.
pub static SNAPSHOT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "eventstore_snapshot_bytes",
            "Size of this node's current snapshot file in bytes",
        )
        .expect("a valid metric name"),
    )
});

/// Changes of leader this node has seen (elections that ended, transfers).
pub static LEADER_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "eventstore_leader_changes_total",
        "Times this node saw a new leader (after an election or a transfer)",
    )
});

/// Peer messages between nodes of different clusters, by direction:
/// `incoming` (this node refused a message from a node of another
/// cluster), `outgoing` (a node of another cluster refused this node's
/// message, or answered as a member of another cluster).
pub static CLUSTER_ID_MISMATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "eventstore_cluster_id_mismatches_total",
                "Peer messages between this node and a node of another cluster, by direction \
                 (incoming: refused here; outgoing: refused by, or answered from, the other node)",
            ),
            &["direction"],
        )
        .expect("a valid metric name"),
    )
});

/// Touches every metric so that each one is exported from the first
/// scrape on, before its first event.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&RELAYED);
    LazyLock::force(&FOLLOWER_READS);
    LazyLock::force(&FSYNC_SECONDS);
    LazyLock::force(&PURGED_VALUES);
    LazyLock::force(&SNAPSHOT_BUILDS);
    LazyLock::force(&SNAPSHOT_BUILD_SECONDS);
    LazyLock::force(&SNAPSHOT_INSTALLS);
    LazyLock::force(&SNAPSHOT_INSTALL_SECONDS);
    LazyLock::force(&SNAPSHOT_BYTES);
    LazyLock::force(&LEADER_CHANGES);
    LazyLock::force(&CLUSTER_ID_MISMATCHES);
    for direction in ["incoming", "outgoing"] {
        let _ = CLUSTER_ID_MISMATCHES.with_label_values(&[direction]);
    }
}

/// A gRPC status code's name as Prometheus labels show it (`OK`,
/// `NOT_FOUND`, ...).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
