//! Clocks that disagree, with real `eventstore serve` processes on
//! 127.0.0.1: one node's wall clock is shifted with libfaketime (Debian's
//! `faketime` package; monotonic time is left true), and leadership is moved
//! onto and off that node while values live.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use eventstore::proto::peer::NodeRequest;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(180);

/// The civil date (`YYYY-MM-DD`, UTC) of `t`.
fn date_of(t: SystemTime) -> String {
    let days = (t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Moves leadership to `to` and waits until every node agrees.
async fn move_leadership(c: &Cluster, to: u64) {
    for _ in 0..20 {
        let leader = c.leader(Duration::from_secs(10)).await;
        if leader == to {
            return;
        }
        let _ = c
            .node(leader)
            .admin()
            .await
            .transfer_leader(NodeRequest { node_id: to })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("leadership did not move to node {to}");
}

/// Waits until the log of `node` shows a line stamped with `date`: proof
/// that libfaketime shifted the process's wall clock.
async fn wait_for_log_date(node: &Server, date: &str) {
    for _ in 0..100 {
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        if log.lines().any(|l| l.contains(date)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "node {}'s log has no line dated {date}: libfaketime did not take effect\n{}",
        node.id,
        node.log_tail()
    );
}

async fn count_present(node: &Server, keys: &[String]) -> usize {
    let mut cl = node.client().await;
    let mut present = 0;
    for k in keys {
        match cl.load(load_req(global(k))).await {
            Ok(_) => present += 1,
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => panic!("load {k} through node {}: {s}", node.id),
        }
    }
    present
}

/// The reproduction: 200 values saved with a 600 s TTL under a
/// leader with a true clock must all still be readable after leadership
/// moves to a node whose wall clock runs a day ahead, and after it moves
/// back.
#[tokio::test]
async fn a_leader_whose_clock_runs_a_day_ahead_expires_nothing_early() {
    let c = Cluster::start_with(3, &[], |s| {
        if s.id == 2 {
            s.fake_wall_clock("+1d");
        }
    })
    .await;
    bounded(LIMIT, async {
        let tomorrow = date_of(SystemTime::now() + Duration::from_secs(86_400));
        wait_for_log_date(c.node(2), &tomorrow).await;
        move_leadership(&c, 0).await;
        let keys: Vec<String> = (0..200).map(|i| format!("skew-{i}")).collect();
        let mut cl = c.node(0).client().await;
        for k in &keys {
            cl.save(save_req(global(k), b"v", 600)).await.unwrap();
        }
        assert_eq!(count_present(c.node(0), &keys).await, 200);

        move_leadership(&c, 2).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        // A write stamped by the skewed leader, too.
        c.node(2)
            .client()
            .await
            .save(save_req(global("under-skew"), b"w", 600))
            .await
            .unwrap();
        let under_skewed = count_present(c.node(2), &keys).await;
        let log = std::fs::read_to_string(&c.node(2).log).unwrap_or_default();
        assert!(
            log.contains("s ahead of the cluster's clock"),
            "the skewed leader did not warn about its clock:\n{}",
            c.node(2).log_tail()
        );

        move_leadership(&c, 0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = count_present(c.node(0), &keys).await;
        assert_eq!(
            (under_skewed, after),
            (200, 200),
            "values with ~10 minutes left were expired by a leader whose clock runs a day ahead"
        );
        // And a value saved under the skewed leader got its full TTL.
        c.node(0)
            .client()
            .await
            .load(load_req(global("under-skew")))
            .await
            .expect("a value saved under the skewed leader expired early");
    })
    .await;
}

/// A value that one leader reported as expired is never served again, even
/// after a failover to a leader whose wall clock is behind. The purger is
/// slowed down so that only the read itself can move the replicated clock.
#[tokio::test]
async fn a_value_reported_expired_is_not_served_again_by_a_leader_whose_clock_is_behind() {
    let c = Cluster::start_with(3, &["--purge-interval-ms", "600000"], |s| {
        if s.id == 2 {
            s.fake_wall_clock("-30s");
        }
    })
    .await;
    bounded(LIMIT, async {
        move_leadership(&c, 0).await;
        let mut cl = c.node(0).client().await;
        cl.save(save_req(global("short"), b"v", 2)).await.unwrap();
        let acked = std::time::Instant::now();
        // Node 0 reports it expired within moments of its deadline.
        loop {
            match cl.load(load_req(global("short"))).await {
                Ok(_) => {
                    assert!(
                        acked.elapsed() < Duration::from_millis(2500),
                        "a value with a 2 s TTL still served after {:?}",
                        acked.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(st) if st.code() == Code::NotFound => break,
                Err(st) => panic!("load short: {st}"),
            }
        }

        move_leadership(&c, 2).await;
        let again = c
            .node(2)
            .client()
            .await
            .load(load_req(global("short")))
            .await;
        assert_eq!(
            again
                .map(|r| r.into_inner().value.to_vec())
                .map_err(|s| s.code()),
            Err(Code::NotFound),
            "a leader whose clock is behind served a value another leader had reported expired"
        );
    })
    .await;
}
