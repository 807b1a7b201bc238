//! Three real `eventstore serve` processes whose peer traffic passes
//! through a proxy per node (`common::proxy`), so a test can cut the link
//! between two nodes only, or slow one node's answers: a leader cut off
//! from its peers, whose clients still reach it, never serves a value older
//! than one the majority acknowledged; a restarted node
//! does not help elect a new leader while the old one still counts its
//! acknowledgement in its read lease; a member removed while leadership
//! moves leaves its id free for a new node.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use eventstore::proto::peer::{AddLearnerRequest, NodeRequest};
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(240);

/// What one read through the old leader gave: when it was sent, and the
/// version it returned (or the error code).
type Read = (Instant, Result<u64, Code>);

/// Reads `k` through `addr` every 20 ms until `stop`, each with a 1 s deadline.
fn read_in_a_loop(addr: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Read>> {
    tokio::spawn(async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut cl = eventstore::proto::protob::event_store_client::EventStoreClient::new(ch);
        let mut reads = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let mut r = tonic::Request::new(load_req(global("k")));
            r.set_timeout(Duration::from_secs(1));
            let got = match cl.load(r).await {
                Ok(v) => Ok(u64::from_be_bytes(
                    v.into_inner().value[..]
                        .try_into()
                        .expect("an 8-byte version"),
                )),
                Err(st) => Err(st.code()),
            };
            reads.push((sent, got));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reads
    })
}

/// The leader loses its peers (both directions) but not its clients, who
/// keep reading through it while the other two elect a new leader and
/// commit newer versions of the same key. Every read the old leader
/// answers must return a version at least as new as the newest one
/// acknowledged before the read was sent; it may fail instead. Once the
/// partition heals, reads through it succeed again with the newest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_that_keeps_its_clients_never_serves_a_stale_value() {
    let (c, proxies) = Cluster::start_behind_proxies(3, &[]).await;
    bounded(LIMIT, async {
        let l = c.leader(Duration::from_secs(10)).await;
        let others: Vec<u64> = c.nodes.iter().map(|n| n.id).filter(|i| *i != l).collect();
        c.node(l)
            .client()
            .await
            .save(save_req(global("k"), &0u64.to_be_bytes(), 600))
            .await
            .unwrap();
        let acked: Arc<Mutex<Vec<(u64, Instant)>>> =
            Arc::new(Mutex::new(vec![(0, Instant::now())]));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = read_in_a_loop(c.node(l).addr(), stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Cut L from its peers only: its client port stays reachable.
        proxies[l as usize].refuse_all();
        for o in &others {
            proxies[*o as usize].refuse(c.node(l).pid());
        }
        let cut = Instant::now();
        let mut via = c.node(others[0]).client().await;
        let mut version = 1u64;
        while cut.elapsed() < Duration::from_secs(4) {
            let mut r = tonic::Request::new(save_req(global("k"), &version.to_be_bytes(), 600));
            r.set_timeout(Duration::from_secs(1));
            if via.save(r).await.is_ok() {
                acked.lock().unwrap().push((version, Instant::now()));
                version += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let newest = version - 1;
        assert!(
            newest >= 5,
            "the majority committed only {newest} versions in 4 s"
        );
        let s = c.node(l).status().await.unwrap();
        assert_eq!(
            s.leader_id,
            Some(l),
            "the cut-off leader should still believe it leads: {s:?}"
        );

        for p in &proxies {
            p.heal();
        }
        let healed = Instant::now();
        // Reads through L succeed again (relayed to the new leader).
        let mut served = false;
        while healed.elapsed() < Duration::from_secs(10) {
            let mut r = tonic::Request::new(load_req(global("k")));
            r.set_timeout(Duration::from_secs(1));
            if let Ok(v) = c.node(l).client().await.load(r).await {
                assert_eq!(
                    &v.into_inner().value[..],
                    &newest.to_be_bytes()[..],
                    "stale read through the old leader after the heal"
                );
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.await.unwrap();
        assert!(
            served,
            "no read through the old leader succeeded after the heal"
        );

        let acked = acked.lock().unwrap().clone();
        let newest_before = |t: Instant| {
            acked
                .iter()
                .filter(|(_, at)| *at < t)
                .map(|(v, _)| *v)
                .max()
                .unwrap_or(0)
        };
        let during: Vec<&Read> = reads
            .iter()
            .filter(|(sent, _)| *sent >= cut && *sent < healed)
            .collect();
        let answered = during.iter().filter(|(_, r)| r.is_ok()).count();
        println!(
            "old leader {l}: {} reads sent during the cut, {answered} answered, {} versions \
             committed by the majority",
            during.len(),
            newest
        );
        assert!(
            !during.is_empty(),
            "no reads reached the old leader during the cut"
        );
        for (sent, got) in &reads {
            match got {
                Ok(v) => assert!(
                    *v >= newest_before(*sent),
                    "stale read: the old leader returned version {v} {:?} after the cut, when \
                     version {} had been acknowledged before the read was sent",
                    sent.saturating_duration_since(cut),
                    newest_before(*sent)
                ),
                Err(code) => assert!(
                    matches!(code, Code::Unavailable | Code::DeadlineExceeded),
                    "{code:?}"
                ),
            }
        }
    })
    .await;
}

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
