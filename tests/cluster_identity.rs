//! Cluster identity: every cluster has a random id, chosen when it is
//! initialized and adopted by every member; a node of another cluster, at
//! a reused address or started on another cluster's data directory, is
//! refused with a clear message, and neither cluster's data reaches the
//! other.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(240);

/// How long refused traffic is given to show in the logs.
const SETTLE: Duration = Duration::from_secs(4);

/// The cluster id every node of `c` shows in its status, once all show one
/// and the same; fails with what each shows otherwise.
async fn common_cluster_id(c: &Cluster) -> String {
    let start = std::time::Instant::now();
    loop {
        let mut ids = Vec::new();
        for n in &c.nodes {
            ids.push(n.status().await.map(|s| s.cluster_id).unwrap_or_default());
        }
        if ids[0].len() == 16 && ids.iter().all(|i| *i == ids[0]) {
            return ids[0].clone();
        }
        if start.elapsed() > Duration::from_secs(10) {
            panic!("the nodes do not show one cluster id: {ids:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves `n` values named `prefix-i` through node `via`.
async fn write(s: &Server, prefix: &str, n: u32) {
    let mut c = s.client().await;
    for i in 0..n {
        c.save(save_req(global(&format!("{prefix}-{i}")), b"v", 600))
            .await
            .unwrap_or_else(|e| panic!("saving {prefix}-{i} through node {}: {e:?}", s.id));
    }
}

/// Whether `key` can be loaded through `s`.
async fn holds(s: &Server, key: &str) -> bool {
    match s.client().await.load(load_req(global(key))).await {
        Ok(_) => true,
        Err(st) if st.code() == Code::NotFound => false,
        Err(st) => panic!("loading {key} through node {}: {st:?}", s.id),
    }
}

/// What a node's log gained since it was `from` bytes long.
fn log_since(s: &Server, from: usize) -> String {
    let all = std::fs::read(&s.log).unwrap_or_default();
    String::from_utf8_lossy(&all[from.min(all.len())..]).to_string()
}

fn log_len(s: &Server) -> usize {
    std::fs::metadata(&s.log)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// The value of `eventstore_cluster_id_mismatches_total{direction=...}` on
/// node `s`.
async fn mismatches(s: &Server, direction: &str) -> f64 {
    let addr = s.metrics_addr().expect("a metrics port");
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let series = format!("eventstore_cluster_id_mismatches_total{{direction=\"{direction}\"}}");
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no {series} in the metrics of node {}", s.id))
}

/// Every record of every column family of the database in `data_dir`,
/// read without writing anything, and the bytes of every snapshot file:
/// what a node holds, whatever files RocksDB arranges it in.
fn content_of(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    use eventstore::store::db::{CF_DATA, CF_EXPIRY, CF_LOG, CF_LOG_META, CF_SM_META};
    let cfs = [CF_LOG, CF_LOG_META, CF_DATA, CF_EXPIRY, CF_SM_META];
    let db = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        data_dir.join("db"),
        cfs,
        false,
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for name in cfs {
        let cf = db.cf_handle(name).unwrap();
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            out.insert(format!("{name}/{k:?}"), v.to_vec());
        }
    }
    for entry in std::fs::read_dir(data_dir.join("snapshots")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            out.insert(format!("{}", p.display()), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// The id of a node of `c` that is not its leader.
async fn a_follower(c: &Cluster) -> u64 {
    let leader = c.leader(Duration::from_secs(10)).await;
    c.nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .unwrap()
}

/// Nodes 1 and 2 start with empty data directories and adopt the id node 0
/// chose when it initialized the cluster; every node shows it, and keeps
/// it after all three are SIGKILLed and restarted.
#[tokio::test]
async fn every_member_adopts_the_cluster_id_and_keeps_it_across_restarts() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let id = common_cluster_id(&c).await;
        let log0 = std::fs::read_to_string(&c.node(0).log).unwrap();
        assert!(
            log0.lines()
                .any(|l| l.contains("initializing a new cluster")
                    && l.contains(&format!("cluster_id={id}"))),
            "node 0 did not log the id it chose:\n{log0}"
        );
        for n in [1, 2] {
            let log = std::fs::read_to_string(&c.node(n).log).unwrap();
            assert!(
                log.contains(&format!("joined cluster {id}")),
                "node {n} did not log the id it adopted:\n{log}"
            );
        }
        write(c.node(0), "k", 3).await;
        for n in &mut c.nodes {
            n.kill9();
        }
        for n in &mut c.nodes {
            n.start();
        }
        c.wait_all_ready(Duration::from_secs(30)).await;
        assert_eq!(common_cluster_id(&c).await, id, "the id changed on restart");
        for n in &c.nodes {
            assert!(holds(n, "k-2").await, "node {} lost k-2", n.id);
        }
    })
    .await;
}

/// Two independent clusters A and B. Node N of A is stopped and node N of
/// B is restarted, with its data, on the peer address that A's node N
/// used: A's leader keeps sending it the log. The stranger refuses every
/// message with both cluster ids in the message; A's leader logs that
/// clearly, both count it, nothing of A reaches the stranger's data and
/// nothing of B reaches A, and both clusters keep serving.
#[tokio::test]
async fn a_node_of_another_cluster_at_a_reused_address_is_refused_and_both_keep_serving() {
    let mut a = Cluster::start(3, &[]).await;
    let mut b = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let a_id = common_cluster_id(&a).await;
        let b_id = common_cluster_id(&b).await;
        assert_ne!(a_id, b_id);
        let a_leader = a.leader(Duration::from_secs(10)).await;
        let b_leader = b.leader(Duration::from_secs(10)).await;
        write(a.node(a_leader), "a", 5).await;
        write(b.node(b_leader), "b", 5).await;

        // A follower in both clusters, so that stopping it moves nothing.
        let moved = (0..3)
            .find(|id| *id != a_leader && *id != b_leader)
            .unwrap();
        let reused = a.node(moved).peer_port;
        // B's node with the same id, with everything B wrote applied.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b_before = b.node(moved).status().await.unwrap();
        assert_eq!(b_before.keys, 5, "{b_before:?}");
        a.node_mut(moved).kill9();
        b.node_mut(moved).terminate(Duration::from_secs(20));
        let b_peers: BTreeMap<u64, u16> = b.nodes.iter().map(|n| (n.id, n.peer_port)).collect();
        let mut stranger = Server::new(
            moved,
            free_port(),
            reused,
            b.dir.path(),
            Some(&Cluster::peers_flag(&b_peers)),
            &[],
        );
        let leader_log = log_len(a.node(a_leader));
        let stranger_log = log_len(&stranger);
        stranger.start();
        tokio::time::sleep(SETTLE).await;

        let seen = log_since(a.node(a_leader), leader_log);
        let sender_side = format!(
            "node {moved} at 127.0.0.1:{reused} belongs to cluster {b_id}, this node (node \
             {a_leader}) to cluster {a_id}: a reused address or a data directory from another \
             cluster?"
        );
        assert!(
            seen.lines()
                .any(|l| l.contains(" WARN ") && l.contains(&sender_side)),
            "A's leader did not log the refusal clearly:\n{seen}"
        );
        let warnings = seen.lines().filter(|l| l.contains(&sender_side)).count();
        println!("A's leader logged the refusal {warnings} time(s) in {SETTLE:?}");
        assert!(warnings <= 2, "logged at every retry:\n{seen}");
        let seen = log_since(&stranger, stranger_log);
        let receiver_side = format!(
            "belongs to cluster {a_id}, this node (node {moved}) to cluster {b_id}: a reused \
             address or a data directory from another cluster?"
        );
        assert!(
            seen.lines()
                .any(|l| l.contains(&format!("node {a_leader} at 127.0.0.1:"))
                    && l.contains(&receiver_side)),
            "the stranger did not log the refusal clearly:\n{seen}"
        );
        assert!(mismatches(a.node(a_leader), "outgoing").await >= 1.0);
        assert!(mismatches(&stranger, "incoming").await >= 1.0);

        // Nothing of A reached the stranger: the same entries, the same state.
        let st = stranger.status().await.unwrap();
        assert_eq!(st.cluster_id, b_id, "{st:?}");
        assert_eq!(st.digest, b_before.digest, "{st:?}");
        assert_eq!(st.keys, b_before.keys, "{st:?}");
        // Nothing of B reached A, and both clusters serve.
        write(a.node(a_leader), "a-after", 3).await;
        write(b.node(b_leader), "b-after", 3).await;
        for n in a.nodes.iter().filter(|n| n.is_running()) {
            assert!(holds(n, "a-4").await && holds(n, "a-after-2").await);
            assert!(
                !holds(n, "b-0").await,
                "B's data reached node {} of A",
                n.id
            );
            let s = n.status().await.unwrap();
            assert_eq!(s.cluster_id, a_id);
        }
        for n in b.nodes.iter().filter(|n| n.is_running()) {
            assert!(holds(n, "b-4").await && holds(n, "b-after-2").await);
            assert!(
                !holds(n, "a-0").await,
                "A's data reached node {} of B",
                n.id
            );
        }
        stranger.kill9();
    })
    .await;
}

/// A node started on a copy of another cluster's data directory (same node
/// id) refuses every message of its own cluster's leader, says why in its
/// log, and its data is unchanged: every record of its database and every
/// snapshot file are the same after it ran. Its own data directory put
/// back, it rejoins.
#[tokio::test]
async fn a_node_on_a_data_directory_of_another_cluster_refuses_to_take_part() {
    let mut a = Cluster::start(3, &[]).await;
    let mut b = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let a_id = common_cluster_id(&a).await;
        let b_id = common_cluster_id(&b).await;
        let a_leader = a.leader(Duration::from_secs(10)).await;
        write(a.node(a_leader), "a", 5).await;
        let b_leader = b.leader(Duration::from_secs(10)).await;
        write(b.node(b_leader), "b", 5).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for n in &mut b.nodes {
            n.terminate(Duration::from_secs(20));
        }

        let wrong = a_follower(&a).await;
        a.node_mut(wrong).kill9();
        let own_dir = a.node(wrong).data_dir.clone();
        let aside = own_dir.with_extension("own");
        std::fs::rename(&own_dir, &aside).unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&b.node(wrong).data_dir)
            .arg(&own_dir)
            .status()
            .unwrap();
        assert!(status.success());
        let before = content_of(&own_dir);

        let leader_log = log_len(a.node(a_leader));
        let node_log = log_len(a.node(wrong));
        a.node_mut(wrong).start();
        tokio::time::sleep(SETTLE).await;
        let seen = log_since(a.node(wrong), node_log);
        assert!(
            seen.lines().any(|l| l.contains("refusing peer messages")
                && l.contains(&format!("node {a_leader} at 127.0.0.1:"))
                && l.contains(&format!(
                    "belongs to cluster {a_id}, this node (node {wrong}) to cluster {b_id}: a \
                     reused address or a data directory from another cluster?"
                ))),
            "no clear refusal in the node's log:\n{seen}"
        );
        let seen = log_since(a.node(a_leader), leader_log);
        assert!(
            seen.contains(&format!(
                "belongs to cluster {b_id}, this node (node {a_leader}) to cluster {a_id}"
            )),
            "no clear refusal in the leader's log:\n{seen}"
        );
        let st = a.node(wrong).status().await.unwrap();
        assert_eq!(st.cluster_id, b_id, "{st:?}");
        assert!(st.health.starts_with("NOT_SERVING"), "{st:?}");
        // A serves on without it.
        write(a.node(a_leader), "a-after", 3).await;
        a.node_mut(wrong).terminate(Duration::from_secs(20));
        let after = content_of(&own_dir);
        assert_eq!(before.len(), after.len());
        for (k, v) in &before {
            assert!(after.get(k) == Some(v), "{k} changed");
        }

        // With its own data directory back, it rejoins A.
        std::fs::rename(&own_dir, own_dir.with_extension("other")).unwrap();
        std::fs::rename(&aside, &own_dir).unwrap();
        a.node_mut(wrong).start();
        a.wait_all_ready(Duration::from_secs(30)).await;
        assert_eq!(common_cluster_id(&a).await, a_id);
        assert!(holds(a.node(wrong), "a-after-2").await);
    })
    .await;
}
