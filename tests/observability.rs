//! The HTTP port of real `eventstore serve` processes: Prometheus metrics
//! that count what clients did, `/healthz` and `/readyz` that say what the
//! node can do, and JSON logs.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);

/// GETs `path` from `addr` over plain HTTP/1.1; returns (status, body).
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// The value of the sample `name{labels}` (labels exactly as Prometheus
/// prints them, sorted by name), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_count_requests_by_method_and_code_and_show_raft_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let http = s.metrics_addr().unwrap();
    bounded(LIMIT, async {
        let mut c = s.client().await;
        for i in 0..3 {
            c.save(save_req(global(&format!("k{i}")), b"v", 60))
                .await
                .unwrap();
        }
        c.load(load_req(global("k0"))).await.unwrap();
        let st = c.load(load_req(global("absent"))).await.unwrap_err();
        assert_eq!(st.code(), Code::NotFound);
        let st = c.save(save_req(global(""), b"v", 60)).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument);

        // openraft's runtime statistics, with the stages the three Saves'
        // entries went through.
        let (status, stats) = get(&http, "/debug/raft").await;
        assert_eq!(status, 200, "{stats}");
        assert!(
            stats.contains("append_batch") && stats.contains("proposed→applied"),
            "{stats}"
        );

        let (status, body) = get(&http, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let count = |series: &str| {
            sample(&body, series).unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
        };
        assert_eq!(
            count(r#"eventstore_requests_total{code="OK",method="save",via="client"}"#),
            3.0
        );
        assert_eq!(
            count(r#"eventstore_requests_total{code="OK",method="load",via="client"}"#),
            1.0
        );
        assert_eq!(
            count(r#"eventstore_requests_total{code="NOT_FOUND",method="load",via="client"}"#),
            1.0
        );
        assert_eq!(
            count(
                r#"eventstore_requests_total{code="INVALID_ARGUMENT",method="save",via="client"}"#
            ),
            1.0
        );
        assert_eq!(
            count(r#"eventstore_request_duration_seconds_count{method="save",via="client"}"#),
            4.0
        );
        assert_eq!(count("eventstore_raft_is_leader"), 1.0);
        assert_eq!(count("eventstore_raft_leader_id"), 0.0);
        let applied = count("eventstore_raft_applied_index");
        assert!(applied >= 3.0, "applied index {applied}");
        assert_eq!(count("eventstore_raft_committed_index"), applied);
        // Every Save was appended to the log with an fsync.
        let fsyncs = count("eventstore_log_fsync_duration_seconds_count");
        assert!(fsyncs >= 3.0, "{fsyncs} synced log writes");
        assert_eq!(count("eventstore_purge_lag_seconds"), 0.0);

        let (status, body) = get(&http, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, body) = get(&http, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));
        let (status, _) = get(&http, "/nothing-here").await;
        assert_eq!(status, 404);
    })
    .await;
}

/// Expired values are purged, and the purge is counted.
#[tokio::test]
async fn purged_values_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &["--purge-interval-ms", "100"]);
    s.wait_ready(Duration::from_secs(30)).await;
    let http = s.metrics_addr().unwrap();
    bounded(LIMIT, async {
        let mut c = s.client().await;
        for i in 0..5 {
            c.save(save_req(global(&format!("short{i}")), b"v", 1))
                .await
                .unwrap();
        }
        let start = std::time::Instant::now();
        loop {
            let (_, body) = get(&http, "/metrics").await;
            if sample(&body, "eventstore_purged_values_total") == Some(5.0) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "5 expired values not purged:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Requests through a follower are counted as relayed there and as
/// `via="relay"` on the leader, a Load served by the follower itself after
/// a read index is counted as a follower read, and the leader shows each
/// follower's replication lag.
#[tokio::test]
async fn relayed_requests_and_replication_lag_are_shown() {
    let c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let follower = (0..3).find(|i| *i != leader).unwrap();
        let mut via = c.node(follower).client().await;
        via.save(save_req(global("k"), b"v", 60)).await.unwrap();
        via.load(load_req(global("k"))).await.unwrap();

        let (_, body) = get(&c.node(follower).metrics_addr().unwrap(), "/metrics").await;
        assert_eq!(
            sample(&body, r#"eventstore_relayed_requests_total{method="save"}"#),
            Some(1.0),
            "{body}"
        );
        assert_eq!(sample(&body, "eventstore_raft_is_leader"), Some(0.0));
        // The Load was served by the follower itself, after a read index.
        assert_eq!(
            sample(
                &body,
                r#"eventstore_follower_reads_total{outcome="served"}"#
            ),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            sample(&body, r#"eventstore_relayed_requests_total{method="load"}"#),
            None,
            "{body}"
        );
        let (_, body) = get(&c.node(leader).metrics_addr().unwrap(), "/metrics").await;
        assert!(
            sample(
                &body,
                r#"eventstore_requests_total{code="OK",method="read_index",via="relay"}"#
            )
            .is_some_and(|n| n >= 1.0),
            "{body}"
        );
        assert_eq!(
            sample(
                &body,
                r#"eventstore_requests_total{code="OK",method="save",via="relay"}"#
            ),
            Some(1.0),
            "{body}"
        );
        for member in (0..3).filter(|i| *i != leader) {
            let series = format!(r#"eventstore_raft_replication_lag_entries{{member="{member}"}}"#);
            assert!(sample(&body, &series).is_some(), "no {series} in:\n{body}");
        }

        // Every metric the Grafana dashboard queries is one a node exports.
        let (_, follower_body) = get(&c.node(follower).metrics_addr().unwrap(), "/metrics").await;
        let exported: std::collections::BTreeSet<String> = body
            .lines()
            .chain(follower_body.lines())
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("deploy/monitoring/grafana-dashboard.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for name in metric_names(expr) {
                    let family = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(&name);
                    assert!(
                        exported.contains(family),
                        "the dashboard queries {name}, which no node exports (panel {})",
                        panel["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(
            queried >= 15,
            "{queried} metric references in the dashboard"
        );
    })
    .await;
}

/// A node of a cluster that has not formed yet knows no leader: it is
/// alive but not ready. Once its peers are up and it has caught up, it is
/// ready.
#[tokio::test]
async fn a_node_without_a_leader_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let peers: std::collections::BTreeMap<u64, u16> =
        (0..3).map(|i| (i, ports[i as usize].1)).collect();
    let flag = Cluster::peers_flag(&peers);
    let mut nodes: Vec<Server> = (0..3)
        .map(|i| {
            let (p, pp) = ports[i as usize];
            Server::new(i, p, pp, dir.path(), Some(&flag), &[])
        })
        .collect();
    nodes[1].start();
    let http = nodes[1].metrics_addr().unwrap();
    bounded(LIMIT, async {
        let start = std::time::Instant::now();
        loop {
            if let Ok((status, body)) = get_if_up(&http, "/healthz").await {
                assert_eq!(status, 200, "{body}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "/healthz never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, body) = get(&http, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("not ready"), "{body}");
        for n in [0, 2] {
            nodes[n].start();
        }
        let start = std::time::Instant::now();
        while get(&http, "/readyz").await.0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the node never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // It started knowing no leader, then found one.
        let (_, body) = get(&http, "/metrics").await;
        let changes = sample(&body, "eventstore_leader_changes_total").unwrap();
        assert!(changes >= 1.0, "{changes} leader changes seen");
    })
    .await;
}

/// The `eventstore_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("eventstore_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Like [`get`], but `Err` while nothing listens yet.
async fn get_if_up(addr: &str, path: &str) -> Result<(u16, String), ()> {
    tokio::net::TcpStream::connect(addr).await.map_err(|_| ())?;
    Ok(get(addr, path).await)
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::single(dir.path(), &["--log-format", "json"]);
    s.wait_ready(Duration::from_secs(30)).await;
    s.kill9();
    let log = std::fs::read_to_string(&s.log).unwrap();
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(
        log.contains("eventstore node started"),
        "no start line in:\n{log}"
    );
    assert!(lines >= 2, "{log}");
}
