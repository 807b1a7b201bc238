//! Three real `eventstore serve` processes whose peer traffic passes
//! through a proxy per node (`common::proxy`), so a test can cut the link
//! between two nodes only, or slow one node's answers: a restarted node
//! does not help elect a new leader while the old one still counts its
//! acknowledgement in its read lease; a member removed while leadership
//! moves leaves its id free for a new node.

mod common;

use std::time::{Duration, Instant};

use common::*;
use eventstore::proto::peer::{AddLearnerRequest, NodeRequest};
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_does_not_vote_while_the_old_leader_holds_its_lease() {
    // Election timeouts of 1.6-2.0 s: a follower that stops hearing from
    // the leader campaigns 3.6-4.0 s later (its lease of 2 s plus one
    // election timeout), and the leader serves reads for 1.6 s after a
    // quorum last acknowledged it. The wide timeouts leave room for a
    // process restart between the two.
    let timing = [
        "--heartbeat-ms",
        "100",
        "--election-timeout-min-ms",
        "1600",
        "--election-timeout-max-ms",
        "2000",
    ];
    let (mut c, proxies) = Cluster::start_behind_proxies(3, &timing).await;
    bounded(LIMIT, async {
        let l = c.leader(Duration::from_secs(20)).await;
        let others: Vec<u64> = c.nodes.iter().map(|n| n.id).filter(|i| *i != l).collect();
        let (a, b) = (others[0], others[1]);
        c.node(l)
            .client()
            .await
            .save(save_req(global("k"), b"old", 600))
            .await
            .unwrap();
        // Let both followers apply it.
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Cut L <-> B only: L keeps its lease through A's acknowledgements.
        proxies[b as usize].refuse(c.node(l).pid());
        proxies[l as usize].refuse(c.node(b).pid());
        let cut = Instant::now();
        // A dies and comes straight back shortly before B campaigns. L
        // hears from nobody after that (its lease runs out 1.6 s after
        // A's last acknowledgement), but until then it serves reads.
        tokio::time::sleep_until((cut + Duration::from_millis(2800)).into()).await;
        c.node_mut(a).kill9();
        proxies[a as usize].refuse(c.node(l).pid());
        proxies[l as usize].refuse_all();
        c.node_mut(a).start();
        let restarted = Instant::now();

        // Write "new" through B: it reaches whichever leader A and B elect.
        let mut via_b = c.node(b).client().await;
        let saved = loop {
            let mut r = tonic::Request::new(save_req(global("k"), b"new", 600));
            r.set_timeout(Duration::from_secs(1));
            if via_b.save(r).await.is_ok() {
                break Instant::now();
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(15),
                "A and B never elected a leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // At once, read through L, which believes it still leads.
        let mut r = tonic::Request::new(load_req(global("k")));
        r.set_timeout(Duration::from_secs(1));
        let read = c.node(l).client().await.load(r).await;
        println!(
            "leader {l}, cut from {b}; {a} restarted {:?} after the cut; \"new\" saved via {b} \
             {:?} after the restart; the old leader answered {:?}",
            restarted - cut,
            saved - restarted,
            read.as_ref()
                .map(|v| String::from_utf8_lossy(&v.get_ref().value).to_string())
        );
        match read {
            Ok(v) => assert_eq!(
                &v.into_inner().value[..],
                b"new",
                "stale read: a leader was elected with the vote of a node that had just \
                 restarted, while the old leader still counted that node's earlier \
                 acknowledgement in its lease"
            ),
            Err(st) => assert!(
                matches!(st.code(), Code::Unavailable | Code::DeadlineExceeded),
                "{st:?}"
            ),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_while_leadership_moves_leaves_its_id_reusable() {
    // openraft gives each replication RPC one heartbeat interval: a long
    // one lets a peer's answers be held back without failing them.
    let timing = [
        "--heartbeat-ms",
        "500",
        "--election-timeout-min-ms",
        "2000",
        "--election-timeout-max-ms",
        "3000",
    ];
    let (mut c, proxies) = Cluster::start_behind_proxies(3, &timing).await;
    bounded(LIMIT, async {
        let l = c.leader(Duration::from_secs(10)).await;
        let others: Vec<u64> = c.nodes.iter().map(|n| n.id).filter(|i| *i != l).collect();
        let (x, y) = (others[0], others[1]);
        let mut cl = c.node(l).client().await;
        for i in 0..10 {
            cl.save(save_req(global(&format!("k{i}")), b"v", 600))
                .await
                .unwrap();
        }
        // Every member's incarnation is on record.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // Y's answers reach L 250 ms late, so the configuration without X,
        // which needs Y's acknowledgement, is committed 250 ms after Y has
        // it. In between, leadership moves to Y.
        proxies[y as usize].delay_replies(Duration::from_millis(250));
        let mut admin = c.node(l).admin().await;
        let remove = tokio::spawn(async move {
            let mut r = tonic::Request::new(NodeRequest { node_id: x });
            r.set_timeout(Duration::from_secs(10));
            admin.remove(r).await
        });
        let start = Instant::now();
        loop {
            if let Ok(s) = c.node(y).status().await {
                if !s.members.iter().any(|m| m.id == x) {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                let s = c.node(y).status().await;
                let r = remove.await;
                panic!("Y never received the configuration without X: {s:?}; remove: {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let moved = c
            .node(l)
            .admin()
            .await
            .transfer_leader(NodeRequest { node_id: y })
            .await;
        let removed = remove.await.unwrap();
        println!(
            "remove answered {:?}; transfer answered {:?}",
            removed
                .as_ref()
                .map(|_| "ok")
                .map_err(|s| s.message().to_string()),
            moved
                .as_ref()
                .map(|_| "ok")
                .map_err(|s| s.message().to_string()),
        );
        proxies[y as usize].delay_replies(Duration::ZERO);
        let leader = c.leader(Duration::from_secs(10)).await;
        assert_eq!(leader, y, "leadership did not move during the removal");
        // Finish the removal if it was cut short (NOT_FOUND: it is done).
        let s = c.node(leader).status().await.unwrap();
        if s.members.iter().any(|m| m.id == x) {
            match c
                .node(leader)
                .admin()
                .await
                .remove(NodeRequest { node_id: x })
                .await
            {
                Ok(_) => {}
                Err(st) => assert_eq!(st.code(), Code::NotFound, "{st:?}"),
            }
        }

        // X comes back empty and is added again under its id.
        c.node_mut(x).kill9();
        std::fs::remove_dir_all(&c.node(x).data_dir).unwrap();
        c.node_mut(x).start();
        let leader = c.leader(Duration::from_secs(10)).await;
        let mut admin = c.node(leader).admin().await;
        let mut r = tonic::Request::new(AddLearnerRequest {
            node_id: x,
            addr: proxies[x as usize].addr(),
        });
        r.set_timeout(Duration::from_secs(15));
        if let Err(st) = admin.add_learner(r).await {
            panic!(
                "node {x} could not be added back under its id: {st:?}\nits log:\n{}",
                c.node(x).log_tail()
            );
        }
        admin.promote(NodeRequest { node_id: x }).await.unwrap();
        c.node(x).wait_ready(Duration::from_secs(30)).await;
        let mut fc = c.node(x).client().await;
        for i in 0..10 {
            fc.load(load_req(global(&format!("k{i}")))).await.unwrap();
        }
    })
    .await;
}
