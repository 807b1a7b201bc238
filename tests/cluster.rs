//! Three (and five) real `eventstore serve` processes on 127.0.0.1: routing
//! through any node, failover with no lost write, unavailability without a
//! quorum, no stale reads from a deposed leader, catch-up by snapshot,
//! identical replicas, TTLs across failover, membership changes, and a node
//! that lost its data.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(240);

/// Waits until every running node reports the same applied index, then
/// returns (applied, digest) per node.
async fn converged(c: &Cluster, timeout: Duration) -> BTreeMap<u64, (Option<u64>, String)> {
    let start = Instant::now();
    loop {
        let mut seen = BTreeMap::new();
        for n in c.nodes.iter().filter(|n| n.is_running()) {
            if let Ok(s) = n.status().await {
                seen.insert(n.id, (s.applied, s.digest, s.last_log_index));
            }
        }
        let running = c.nodes.iter().filter(|n| n.is_running()).count();
        let applied: Vec<_> = seen.values().map(|v| v.0).collect();
        let last: Vec<_> = seen.values().map(|v| v.2).collect();
        if seen.len() == running
            && applied.windows(2).all(|w| w[0] == w[1])
            && last.windows(2).all(|w| w[0] == w[1])
            && applied
                .first()
                .map(|a| a.is_some() && *a == last[0])
                .unwrap_or(false)
        {
            return seen.into_iter().map(|(k, v)| (k, (v.0, v.1))).collect();
        }
        if start.elapsed() > timeout {
            let logs: Vec<String> = c
                .nodes
                .iter()
                .map(|n| format!("--- node {} ---\n{}", n.id, n.log_tail()))
                .collect();
            panic!(
                "replicas did not converge within {timeout:?}: {seen:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Panics unless every node in `states` holds the same digest.
fn assert_same_state(states: &BTreeMap<u64, (Option<u64>, String)>) {
    let digests: Vec<&String> = states.values().map(|(_, d)| d).collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "replicas diverged: {states:?}"
    );
}

/// Moves leadership to node `to` and waits until it leads, so that reads
/// through it come from its own state machine instead of being relayed.
async fn make_leader(c: &Cluster, to: u64) {
    let from = c.leader(Duration::from_secs(10)).await;
    if from != to {
        c.node(from)
            .admin()
            .await
            .transfer_leader(eventstore::proto::peer::NodeRequest { node_id: to })
            .await
            .unwrap();
    }
    let start = Instant::now();
    while c.node(to).status().await.ok().and_then(|s| s.leader_id) != Some(to) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "leadership did not move to node {to}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn writes_through_each_node_are_readable_through_every_node() {
    let c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        for writer in &c.nodes {
            let mut w = writer.client().await;
            let key = format!("from-{}", writer.id);
            w.save(save_req(bridge("b", &key), key.as_bytes(), 60))
                .await
                .unwrap();
            for reader in &c.nodes {
                let mut r = reader.client().await;
                let got = r
                    .load(load_req(bridge("b", &key)))
                    .await
                    .unwrap()
                    .into_inner()
                    .value;
                assert_eq!(
                    &got[..],
                    key.as_bytes(),
                    "written via {}, read via {}",
                    writer.id,
                    reader.id
                );
            }
        }
        // A delete through a follower is seen through the leader.
        let leader = c.leader(Duration::from_secs(10)).await;
        let follower = c.nodes.iter().find(|n| n.id != leader).unwrap();
        follower
            .client()
            .await
            .delete(delete_req(bridge("b", "from-0")))
            .await
            .unwrap();
        let st = c
            .node(leader)
            .client()
            .await
            .load(load_req(bridge("b", "from-0")))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::NotFound);
        // Validation errors come back unchanged through a follower.
        let st = follower
            .client()
            .await
            .save(save_req(bridge("", "k"), b"v", 5))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument);
    })
    .await;
}

/// Writes keys `PREFIX-N` (value N, a 600 s TTL) through the given nodes
/// in turn until stopped; records every acknowledged write and the longest
/// gap between acknowledgements.
struct Writer {
    prefix: String,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    max_gap_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(addrs: Vec<String>) -> Writer {
        Writer::start_named("w", addrs)
    }

    fn start_named(prefix: &str, addrs: Vec<String>) -> Writer {
        let prefix = prefix.to_string();
        let key_prefix = prefix.clone();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let max_gap_ms = Arc::new(AtomicU64::new(0));
        let (a, s, g) = (acked.clone(), stop.clone(), max_gap_ms.clone());
        let task = tokio::spawn(async move {
            let mut last_ok = Instant::now();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let addr = &addrs[(i as usize) % addrs.len()];
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_timeout(Duration::from_millis(300))
                    .connect_lazy();
                let mut client =
                    eventstore::proto::protob::event_store_client::EventStoreClient::new(ch);
                let mut req = tonic::Request::new(save_req(
                    global(&format!("{key_prefix}-{i}")),
                    &i.to_be_bytes(),
                    600,
                ));
                req.set_timeout(Duration::from_secs(2));
                if client.save(req).await.is_ok() {
                    a.lock().unwrap().push(i);
                    let gap = last_ok.elapsed().as_millis() as u64;
                    g.fetch_max(gap, Ordering::Relaxed);
                    last_ok = Instant::now();
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                i += 1;
            }
        });
        Writer {
            prefix,
            acked,
            stop,
            max_gap_ms,
            task,
        }
    }

    /// How many writes were acknowledged so far.
    fn acked_so_far(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn finish(self) -> (Vec<u64>, Duration) {
        let (_, acked, gap) = self.finish_named().await;
        (acked, gap)
    }

    async fn finish_named(self) -> (String, Vec<u64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (
            self.prefix,
            acked,
            Duration::from_millis(self.max_gap_ms.load(Ordering::Relaxed)),
        )
    }
}

async fn assert_all_present(node: &Server, acked: &[u64]) {
    assert_all_present_named(node, "w", acked).await
}

async fn assert_all_present_named(node: &Server, prefix: &str, acked: &[u64]) {
    let mut c = node.client().await;
    for i in acked {
        let got = c
            .load(load_req(global(&format!("{prefix}-{i}"))))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "acknowledged write {prefix}-{i} lost via node {}: {e:?}",
                    node.id
                )
            });
        assert_eq!(got.into_inner().value.to_vec(), i.to_be_bytes().to_vec());
    }
}

#[tokio::test]
async fn leader_sigkill_failover_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let survivors: Vec<String> = c
            .nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.addr())
            .collect();
        let writer = Writer::start(survivors);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let old_term = c.node(leader).status().await.unwrap().term;
        let before_kill = writer.acked_so_far();
        let killed_at = Instant::now();
        c.node_mut(leader).kill9();
        let new_leader = c.leader(Duration::from_secs(10)).await;
        let elected_after = killed_at.elapsed();
        let new_term = c.node(new_leader).status().await.unwrap().term;
        assert!(
            new_term > old_term,
            "no election after the leader died: term {old_term} -> {new_term}"
        );
        // Followers wait out the dead leader's lease (the maximum election
        // timeout, 800 ms in the tests), then one election timeout
        // (400-800 ms) and a vote round: at most about 1.7 s.
        assert!(
            elected_after < Duration::from_millis(2500),
            "a new leader took {elected_after:?}"
        );
        // Writes resume under the new leader.
        let start = Instant::now();
        while writer.acked_so_far() < before_kill + 10 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "writes did not resume under the new leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (acked, max_gap) = writer.finish().await;
        println!(
            "leader {leader} killed: new leader {new_leader} seen after {elected_after:?}; \
             longest gap between acknowledged writes {max_gap:?}; {} writes acknowledged",
            acked.len()
        );
        assert!(
            acked.len() > 10,
            "too few writes acknowledged: {}",
            acked.len()
        );
        for n in c.nodes.iter().filter(|n| n.is_running()) {
            assert_all_present(n, &acked).await;
        }
        // The killed node restarts and catches up.
        c.node_mut(leader).start();
        c.node(leader).wait_ready(Duration::from_secs(30)).await;
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
        assert_all_present(c.node(leader), &acked).await;
    })
    .await;
}

/// Every node is SIGKILLed at once while four clients write: whatever was
/// acknowledged was on a majority's disk, so after a restart of all three
/// every acknowledged write is there (each a 600 s value, nothing expires).
#[tokio::test]
async fn sigkill_of_every_node_during_writes_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr()).collect();
        let writers: Vec<Writer> = (0..4)
            .map(|w| {
                let mut a = addrs.clone();
                a.rotate_left(w % addrs.len());
                Writer::start_named(&format!("c{w}"), a)
            })
            .collect();
        let start = Instant::now();
        while writers.iter().map(|w| w.acked_so_far()).sum::<usize>() < 400 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "too few writes acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in 0..3 {
            c.node(id).signal(Signal::SIGKILL);
        }
        for id in 0..3 {
            c.node_mut(id).kill9();
        }
        let mut acked = Vec::new();
        for w in writers {
            acked.push(w.finish_named().await);
        }
        for id in 0..3 {
            c.node_mut(id).start();
        }
        c.wait_all_ready(Duration::from_secs(30)).await;
        let total: usize = acked.iter().map(|(_, a, _)| a.len()).sum();
        println!("{total} writes acknowledged before every node was killed");
        for (prefix, ids, _) in &acked {
            assert_all_present_named(c.node(0), prefix, ids).await;
        }
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
    })
    .await;
}

/// The leader's read lease with the tests' timeouts: 80 % of the maximum
/// election timeout of 800 ms (`common::Server::new`).
const READ_LEASE: Duration = Duration::from_millis(640);

#[tokio::test]
async fn without_a_quorum_requests_fail_within_their_deadline_and_nothing_is_lost() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let mut client = c.node(leader).client().await;
        for i in 0..20 {
            client
                .save(save_req(global(&format!("k{i}")), b"v", 600))
                .await
                .unwrap();
        }
        for id in (0..3).filter(|id| *id != leader) {
            c.node_mut(id).kill9();
        }
        // Once its lease has run out, the leader checks for a quorum with
        // one heartbeat round of at most one lease, and refuses (nothing
        // applied) instead of waiting out the request's deadline.
        tokio::time::sleep(READ_LEASE + Duration::from_millis(400)).await;
        for op in ["save", "load"] {
            let start = Instant::now();
            let st = if op == "save" {
                let mut r = tonic::Request::new(save_req(global("refused"), b"v", 600));
                r.set_timeout(Duration::from_secs(10));
                client.save(r).await.unwrap_err()
            } else {
                let mut r = tonic::Request::new(load_req(global("k1")));
                r.set_timeout(Duration::from_secs(10));
                client.load(r).await.unwrap_err()
            };
            let took = start.elapsed();
            println!(
                "{op} without quorum: {:?} after {took:?}: {}",
                st.code(),
                st.message()
            );
            assert_eq!(st.code(), Code::Unavailable, "{op} without quorum: {st:?}");
            assert!(st.message().contains("nothing was applied"), "{st:?}");
            assert!(
                took < READ_LEASE + Duration::from_millis(500),
                "{op} took {took:?}, more than one lease"
            );
        }
        for id in (0..3).filter(|id| *id != leader) {
            c.node_mut(id).start();
        }
        c.wait_all_ready(Duration::from_secs(30)).await;
        for n in &c.nodes {
            let mut cl = n.client().await;
            for i in 0..20 {
                cl.load(load_req(global(&format!("k{i}")))).await.unwrap();
            }
        }
        // UNAVAILABLE from the leader means "not applied".
        let st = c
            .node(leader)
            .client()
            .await
            .load(load_req(global("refused")))
            .await
            .unwrap_err();
        assert_eq!(
            st.code(),
            Code::NotFound,
            "the refused write was applied: {st:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_paused_leader_steps_down_and_never_serves_a_stale_read() {
    let c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let old = c.leader(Duration::from_secs(10)).await;
        let mut via_old = c.node(old).client().await;
        via_old
            .save(save_req(global("k"), b"old", 600))
            .await
            .unwrap();
        c.node(old).signal(Signal::SIGSTOP);
        // The other two elect a new leader.
        let start = Instant::now();
        'elected: loop {
            for n in c.nodes.iter().filter(|n| n.id != old) {
                if let Ok(s) = n.status().await {
                    if s.leader_id == Some(n.id) {
                        break 'elected;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no new leader while the old one was paused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let other = c.nodes.iter().find(|n| n.id != old).unwrap();
        let mut via_other = other.client().await;
        let mut r = tonic::Request::new(save_req(global("k"), b"new", 600));
        r.set_timeout(Duration::from_secs(5));
        via_other.save(r).await.unwrap();
        // A read sent to the paused node waits in its socket until it resumes.
        let addr = c.node(old).addr();
        let pending = tokio::spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy();
            let mut cl = eventstore::proto::protob::event_store_client::EventStoreClient::new(ch);
            let mut r = tonic::Request::new(load_req(global("k")));
            r.set_timeout(Duration::from_secs(8));
            cl.load(r).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.node(old).signal(Signal::SIGCONT);
        match pending.await.unwrap() {
            Ok(r) => assert_eq!(
                &r.into_inner().value[..],
                b"new",
                "stale read from a deposed leader"
            ),
            Err(st) => assert!(
                matches!(st.code(), Code::Unavailable | Code::DeadlineExceeded),
                "{st:?}"
            ),
        }
        for _ in 0..20 {
            let r = via_old.load(load_req(global("k"))).await;
            if let Ok(r) = r {
                assert_eq!(
                    &r.into_inner().value[..],
                    b"new",
                    "stale read from a deposed leader"
                );
            }
        }
        let s = c.node(old).status().await.unwrap();
        assert_ne!(
            s.leader_id,
            Some(old),
            "the paused leader must have stepped down: {s:?}"
        );
    })
    .await;
}

/// Followers serve Loads from their own state after a read index: a Load
/// through a follower that starts after a write was acknowledged (through
/// any node) sees that write or a newer one. A writer saves increasing
/// versions through the leader while readers load through both followers
/// and compare with the newest version acknowledged before each Load.
#[tokio::test]
async fn a_follower_read_sees_every_write_acknowledged_before_it() {
    let c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let acked = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let mut w = c.node(leader).client().await;
        w.save(save_req(global("v"), &0u64.to_be_bytes(), 600))
            .await
            .unwrap();
        let writer = {
            let (acked, done) = (acked.clone(), done.clone());
            tokio::spawn(async move {
                let mut version = 0u64;
                while !done.load(Ordering::SeqCst) {
                    version += 1;
                    w.save(save_req(global("v"), &version.to_be_bytes(), 600))
                        .await
                        .unwrap();
                    acked.store(version, Ordering::SeqCst);
                }
                version
            })
        };
        let mut readers = Vec::new();
        for follower in (0..3).filter(|i| *i != leader) {
            for _ in 0..4 {
                let mut r = c.node(follower).client().await;
                let (acked, done) = (acked.clone(), done.clone());
                readers.push(tokio::spawn(async move {
                    let mut reads = 0u64;
                    while !done.load(Ordering::SeqCst) {
                        let before = acked.load(Ordering::SeqCst);
                        let got = r
                            .load(load_req(global("v")))
                            .await
                            .unwrap()
                            .into_inner()
                            .value;
                        let seen = u64::from_be_bytes(got[..].try_into().unwrap());
                        assert!(
                            seen >= before,
                            "stale read through follower {follower}: version {seen} after \
                             version {before} was acknowledged"
                        );
                        reads += 1;
                    }
                    reads
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        done.store(true, Ordering::SeqCst);
        let versions = writer.await.unwrap();
        let mut reads = 0;
        for r in readers {
            reads += r.await.unwrap();
        }
        println!("{versions} versions written, {reads} reads through followers");
        assert!(
            versions > 20 && reads > 100,
            "{versions} versions, {reads} reads"
        );
    })
    .await;
}

/// Stops one follower (SIGKILL) and saves `location(i)` = `value(i)` for
/// i = 0, 1, ... through the leader until the leader has purged its log
/// behind a snapshot, so the follower can only catch up by snapshot.
/// Returns the leader, the stopped follower and how many values were saved.
async fn stop_a_follower_and_write_past_the_log(
    c: &mut Cluster,
    location: impl Fn(u32) -> eventstore::proto::protob::LocationType,
    value: impl Fn(u32) -> Vec<u8>,
) -> (u64, u64, u32) {
    let leader = c.leader(Duration::from_secs(10)).await;
    let lagging = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .unwrap();
    c.node_mut(lagging).kill9();
    let mut client = c.node(leader).client().await;
    // The leader purges its log behind a snapshot only between retries
    // to the unreachable node, so keep writing until it has.
    let mut written = 0u32;
    loop {
        for i in written..written + 100 {
            client
                .save(save_req(location(i), &value(i), 600))
                .await
                .unwrap();
        }
        written += 100;
        let s = c.node(leader).status().await.unwrap();
        if s.purged_index.unwrap_or(0) > 100 {
            return (leader, lagging, written);
        }
        assert!(written < 5000, "the leader never purged its log: {s:?}");
    }
}

/// A follower that missed more than the leader's log holds catches up by
/// snapshot, and then holds the very same state: the same digest, and,
/// once it leads, the same values from its own state machine, the same
/// deadlines (values saved before the snapshot expire on time) and an
/// expiry index that lets it purge them.
#[tokio::test]
async fn a_node_that_missed_many_writes_catches_up_by_snapshot() {
    let mut c = Cluster::start(
        3,
        &[
            "--snapshot-every",
            "50",
            "--keep-behind-snapshot",
            "5",
            "--purge-interval-ms",
            "200",
        ],
    )
    .await;
    bounded(LIMIT, async {
        let (leader, lagging, written) = stop_a_follower_and_write_past_the_log(
            &mut c,
            |i| instance("b", "i", &format!("k{i}")),
            |i| i.to_be_bytes().to_vec(),
        )
        .await;
        // Short-lived values, then enough writes that the leader's next
        // snapshot holds them: the lagging node learns them, and their
        // deadlines, only from that snapshot.
        const SHORT: u32 = 30;
        const SHORT_TTL: u64 = 15;
        let mut client = c.node(leader).client().await;
        let short_saved = Instant::now();
        for i in 0..SHORT {
            client
                .save(save_req(
                    bridge("b", &format!("short{i}")),
                    b"s",
                    SHORT_TTL as i32,
                ))
                .await
                .unwrap();
        }
        let short_index = c.node(leader).status().await.unwrap().last_log_index;
        let mut filler = written;
        while c.node(leader).status().await.unwrap().snapshot_index < short_index {
            for i in filler..filler + 50 {
                client
                    .save(save_req(
                        instance("b", "i", &format!("k{i}")),
                        &i.to_be_bytes(),
                        600,
                    ))
                    .await
                    .unwrap();
            }
            filler += 50;
            assert!(
                filler < written + 1000,
                "no snapshot holds the short values"
            );
        }

        c.node_mut(lagging).start();
        c.node(lagging).wait_ready(Duration::from_secs(30)).await;
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
        assert!(
            c.node(lagging).log_tail().contains("snapshot installed"),
            "no snapshot was installed"
        );

        // Led by the caught-up node, reads come from its own state machine.
        make_leader(&c, lagging).await;
        assert!(
            short_saved.elapsed() < Duration::from_secs(SHORT_TTL - 2),
            "catching up took too long to check the short values before they expire"
        );
        let mut cl = c.node(lagging).client().await;
        for i in (0..filler).step_by(37) {
            let v = cl
                .load(load_req(instance("b", "i", &format!("k{i}"))))
                .await
                .unwrap();
            assert_eq!(v.into_inner().value.to_vec(), i.to_be_bytes().to_vec());
        }
        for i in 0..SHORT {
            cl.load(load_req(bridge("b", &format!("short{i}"))))
                .await
                .unwrap_or_else(|e| panic!("short{i} before its deadline: {e:?}"));
        }
        let keys_before = c.node(lagging).status().await.unwrap().keys;

        // Past the deadline they are gone, and the new leader purges them.
        tokio::time::sleep(
            (short_saved + Duration::from_secs(SHORT_TTL) + Duration::from_millis(300))
                .saturating_duration_since(Instant::now()),
        )
        .await;
        for i in 0..SHORT {
            let st = cl
                .load(load_req(bridge("b", &format!("short{i}"))))
                .await
                .unwrap_err();
            assert_eq!(st.code(), Code::NotFound, "short{i} past its deadline");
        }
        let start = Instant::now();
        loop {
            let s = c.node(lagging).status().await.unwrap();
            if s.keys == keys_before - u64::from(SHORT) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the caught-up leader did not purge the expired values: {} keys, {} before",
                s.keys,
                keys_before
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
    })
    .await;
}

/// Disk corruption on the leader: eight bytes of one value change inside its
/// current snapshot file while a follower is down. The follower must still
/// come back with exactly the leader's state, and serve the true value once
/// it leads.
#[tokio::test]
async fn a_leader_with_a_corrupt_snapshot_file_still_brings_a_follower_up_to_the_same_state() {
    let mut c = Cluster::start(
        3,
        &["--snapshot-every", "50", "--keep-behind-snapshot", "5"],
    )
    .await;
    bounded(LIMIT, async {
        let value = |i: u32| format!("value-{i:06}-0123456789abcdef").into_bytes();
        let (leader, lagging, written) =
            stop_a_follower_and_write_past_the_log(&mut c, |i| global(&format!("k{i}")), value)
                .await;
        // Change eight bytes of one value inside the leader's snapshot file.
        let path = c
            .node(leader)
            .data_dir
            .join("snapshots")
            .join("current.snap");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(7)
            .position(|w| w == b"value-0")
            .expect("a value in the snapshot file");
        let digits = std::str::from_utf8(&bytes[at + 6..at + 12])
            .unwrap()
            .to_string();
        let victim: u32 = digits.parse().unwrap();
        bytes[at + 13..at + 21].copy_from_slice(b"CORRUPT!");
        std::fs::write(&path, &bytes).unwrap();

        c.node_mut(lagging).start();
        c.node(lagging).wait_ready(Duration::from_secs(30)).await;
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
        assert!(
            c.node(lagging).log_tail().contains("snapshot installed"),
            "the follower did not catch up by snapshot"
        );
        // Led by the caught-up node, reads come from its own state machine.
        make_leader(&c, lagging).await;
        let mut cl = c.node(lagging).client().await;
        let got = cl
            .load(load_req(global(&format!("k{victim}"))))
            .await
            .unwrap()
            .into_inner()
            .value;
        assert_eq!(
            got.to_vec(),
            value(victim),
            "the corrupted value was served"
        );
        for i in (0..written).step_by(97) {
            let got = cl.load(load_req(global(&format!("k{i}")))).await.unwrap();
            assert_eq!(got.into_inner().value.to_vec(), value(i));
        }
    })
    .await;
}

/// A snapshot that takes longer to send than any fixed limit (here about
/// 40 MiB at 1 MiB/s) completes, with progress in the leader's log; a
/// transfer that stalls (the follower is paused) is abandoned and retried.
#[tokio::test]
async fn a_long_snapshot_transfer_completes_and_a_stalled_one_is_abandoned() {
    let mut c = Cluster::start(
        3,
        &[
            "--snapshot-every",
            "20",
            "--keep-behind-snapshot",
            "2",
            "--snapshot-send-rate-mib",
            "1",
            "--snapshot-stall-timeout-ms",
            "3000",
        ],
    )
    .await;
    bounded(Duration::from_secs(240), async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let lagging = c
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != leader)
            .unwrap();
        c.node_mut(lagging).kill9();
        let mut client = c.node(leader).client().await;
        let value = |i: u32| {
            let mut v = format!("large-{i:04}-").into_bytes();
            v.resize(1000 * 1024, i as u8);
            v
        };
        let mut written = 0u32;
        while written < 40
            || c.node(leader)
                .status()
                .await
                .unwrap()
                .purged_index
                .unwrap_or(0)
                < 30
        {
            client
                .save(save_req(
                    global(&format!("big{written}")),
                    &value(written),
                    600,
                ))
                .await
                .unwrap();
            written += 1;
            assert!(written < 200, "the leader never purged its log");
        }
        c.node_mut(lagging).start();
        // Once the transfer is under way, pause the follower: the leader
        // must notice that the transfer stopped moving and abandon it.
        let start = Instant::now();
        while !c.node(leader).log_tail().contains("sending snapshot") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no snapshot was sent"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.node(lagging).signal(Signal::SIGSTOP);
        let start = Instant::now();
        let marker = format!("snapshot transfer to node {lagging}");
        loop {
            let log = std::fs::read_to_string(&c.node(leader).log).unwrap();
            if log.contains(&marker) && (log.contains("stalled") || log.contains("failed after")) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "a stalled transfer was not abandoned:\n{}",
                c.node(leader).log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.node(lagging).signal(Signal::SIGCONT);
        c.node(lagging).wait_ready(Duration::from_secs(150)).await;
        let states = converged(&c, Duration::from_secs(60)).await;
        let digests: Vec<&String> = states.values().map(|(_, d)| d).collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{states:?}");
        let log = std::fs::read_to_string(&c.node(leader).log).unwrap();
        assert!(
            log.contains("snapshot transfer in progress"),
            "no progress was logged during the transfer"
        );
        assert!(log.contains("snapshot sent and installed"));
        let took = c.node(lagging).log_tail();
        assert!(took.contains("snapshot installed"), "{took}");
    })
    .await;
}

#[tokio::test]
async fn replicas_hold_identical_state_at_the_same_applied_index() {
    let c = Cluster::start(3, &["--purge-interval-ms", "100"]).await;
    bounded(LIMIT, async {
        for (n, node) in c.nodes.iter().enumerate() {
            let mut cl = node.client().await;
            for i in 0..60u32 {
                let ttl = if i % 3 == 0 { 1 } else { 600 };
                cl.save(save_req(
                    bridge(&format!("b{n}"), &format!("k{i}")),
                    &[i as u8; 10],
                    ttl,
                ))
                .await
                .unwrap();
                if i % 7 == 0 {
                    cl.delete(delete_req(bridge(&format!("b{n}"), &format!("k{}", i / 2))))
                        .await
                        .unwrap();
                }
            }
        }
        // Per writer: 60 keys, minus 20 with a 1 s TTL and 9 deleted, 4 of
        // which were both: 35 remain, 105 in all, once the short TTLs
        // expired and the purges replicated.
        let start = Instant::now();
        loop {
            let mut counts = Vec::new();
            for n in &c.nodes {
                counts.push(n.status().await.unwrap().keys);
            }
            if counts.iter().all(|k| *k == 105) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "key counts {counts:?}, not 105 on every node"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
        let s = c.node(0).status().await.unwrap();
        assert_eq!(s.keys, 105);
        println!("converged at {:?} with digest {}", s.applied, s.digest);
    })
    .await;
}

#[tokio::test]
async fn a_ttl_keeps_its_original_deadline_across_failover() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let mut cl = c.node(leader).client().await;
        let sent = Instant::now();
        cl.save(save_req(global("ttl"), b"v", 5)).await.unwrap();
        let acked = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.node_mut(leader).kill9();
        let new_leader = c.leader(Duration::from_secs(10)).await;
        let mut cl = c.node(new_leader).client().await;
        // Not shorter: still there 4 s after the acknowledgement.
        tokio::time::sleep(
            (acked + Duration::from_millis(4000)).saturating_duration_since(Instant::now()),
        )
        .await;
        cl.load(load_req(global("ttl")))
            .await
            .expect("the TTL was shortened by the failover");
        // Not longer: gone 5.5 s after the request was sent.
        tokio::time::sleep(
            (sent + Duration::from_millis(5500)).saturating_duration_since(Instant::now()),
        )
        .await;
        let st = cl.load(load_req(global("ttl"))).await.unwrap_err();
        assert_eq!(
            st.code(),
            Code::NotFound,
            "the TTL was extended by the failover"
        );
    })
    .await;
}

#[tokio::test]
async fn grow_to_five_voters_lose_two_originals_and_shrink_back_while_a_client_writes() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        // Two more nodes, started empty; they wait to be contacted.
        let mut ids_ports: BTreeMap<u64, u16> = BTreeMap::new();
        for n in &c.nodes {
            ids_ports.insert(n.id, n.peer_port);
        }
        let extra: Vec<(u64, u16, u16)> = (3..5).map(|id| (id, free_port(), free_port())).collect();
        for (id, _, pp) in &extra {
            ids_ports.insert(*id, *pp);
        }
        let flag = Cluster::peers_flag(&ids_ports);
        for (id, p, pp) in &extra {
            let mut s = Server::new(*id, *p, *pp, c.dir.path(), Some(&flag), &[]);
            s.start();
            c.nodes.push(s);
        }
        let writer = Writer::start(c.nodes.iter().map(|n| n.addr()).collect());
        let leader = c.leader(Duration::from_secs(10)).await;
        let mut admin = c.node(leader).admin().await;
        for (id, _, pp) in &extra {
            admin
                .add_learner(eventstore::proto::peer::AddLearnerRequest {
                    node_id: *id,
                    addr: format!("127.0.0.1:{pp}"),
                })
                .await
                .unwrap();
            admin
                .promote(eventstore::proto::peer::NodeRequest { node_id: *id })
                .await
                .unwrap();
        }
        let s = c.node(leader).status().await.unwrap();
        assert_eq!(s.members.iter().filter(|m| m.voter).count(), 5, "{s:?}");

        // The new voters count: with two of the original three stopped
        // (the leader among them), only they make a quorum of three.
        let stopped = [leader, (0..3).find(|i| *i != leader).unwrap()];
        for id in stopped {
            c.node_mut(id).kill9();
        }
        let before = writer.acked_so_far();
        let start = Instant::now();
        while writer.acked_so_far() < before + 20 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no writes with two of the original three stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in stopped {
            c.node_mut(id).start();
        }
        c.wait_all_ready(Duration::from_secs(30)).await;

        // Shrink back to the original three (the leader may be one of the
        // removed nodes: each removal goes to whoever leads then).
        for (id, _, _) in &extra {
            let leader = c.leader(Duration::from_secs(10)).await;
            c.node(leader)
                .admin()
                .await
                .remove(eventstore::proto::peer::NodeRequest { node_id: *id })
                .await
                .unwrap();
        }
        let leader = c.leader(Duration::from_secs(10)).await;
        let s = c.node(leader).status().await.unwrap();
        let voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
        assert_eq!(voters, vec![0, 1, 2], "{s:?}");
        let before = writer.acked_so_far();
        let start = Instant::now();
        while writer.acked_so_far() < before + 10 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no writes after shrinking back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (acked, _) = writer.finish().await;
        for n in &c.nodes[..3] {
            assert_all_present(n, &acked).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_node_that_lost_its_data_refuses_to_rejoin_and_can_be_replaced() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let mut cl = c.node(leader).client().await;
        for i in 0..10 {
            cl.save(save_req(global(&format!("k{i}")), b"v", 600))
                .await
                .unwrap();
        }
        // Wait until every member's incarnation is on record.
        converged(&c, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let lost = c
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != leader && *id != 0)
            .unwrap_or_else(|| {
                c.nodes
                    .iter()
                    .map(|n| n.id)
                    .find(|id| *id != leader)
                    .unwrap()
            });
        c.node_mut(lost).kill9();
        std::fs::remove_dir_all(&c.node(lost).data_dir).unwrap();
        c.node_mut(lost).start();
        // The leader recognises the new incarnation and refuses to send it
        // the log (which would make it vote on entries it never stored).
        let start = Instant::now();
        loop {
            let log = c.node(lost).log_tail();
            if log.contains("its data was lost") || log.contains("lost its data") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the wiped node was not told it lost its data; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = c.node(lost).status().await.unwrap();
        assert_eq!(
            s.last_log_index, None,
            "the wiped node must not receive the log: {s:?}"
        );
        // Replace it: remove the old member, then add the empty node back
        // under the same id (as a StatefulSet pod keeps its ordinal).
        let mut admin = c.node(leader).admin().await;
        admin
            .remove(eventstore::proto::peer::NodeRequest { node_id: lost })
            .await
            .unwrap();
        let addr = c.node(lost).peer_addr();
        admin
            .add_learner(eventstore::proto::peer::AddLearnerRequest {
                node_id: lost,
                addr,
            })
            .await
            .unwrap();
        admin
            .promote(eventstore::proto::peer::NodeRequest { node_id: lost })
            .await
            .unwrap();
        c.node(lost).wait_ready(Duration::from_secs(30)).await;
        let mut fc = c.node(lost).client().await;
        for i in 0..10 {
            fc.load(load_req(global(&format!("k{i}")))).await.unwrap();
        }
        let s = c.node(leader).status().await.unwrap();
        let voters = s.members.iter().filter(|m| m.voter).count();
        assert_eq!(voters, 3, "{s:?}");
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
        // Led by the replacement, reads come from its own state machine.
        make_leader(&c, lost).await;
        let mut fc = c.node(lost).client().await;
        for i in 0..10 {
            fc.load(load_req(global(&format!("k{i}")))).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn node_0_that_lost_its_data_waits_and_can_be_replaced() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let mut cl = c.node(0).client().await;
        for i in 0..10 {
            cl.save(save_req(global(&format!("k{i}")), b"v", 600))
                .await
                .unwrap();
        }
        // Wait until every member's incarnation is on record.
        converged(&c, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // Node 0 (the bootstrapper) loses its data while its peers are too
        // slow to answer: it must not take their silence for "no log".
        c.node_mut(0).kill9();
        std::fs::remove_dir_all(&c.node(0).data_dir).unwrap();
        c.node(1).signal(Signal::SIGSTOP);
        c.node(2).signal(Signal::SIGSTOP);
        let earlier = std::fs::read(&c.node(0).log).unwrap().len();
        c.node_mut(0).start();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let log =
            String::from_utf8_lossy(&std::fs::read(&c.node(0).log).unwrap()[earlier..]).to_string();
        assert!(
            !log.contains("initializing a new cluster"),
            "node 0 initialized a second cluster because its peers did not answer:\n{log}"
        );
        c.node(1).signal(Signal::SIGCONT);
        c.node(2).signal(Signal::SIGCONT);

        // Once they answer, it finds the cluster and waits to be added.
        let leader = c.leader(Duration::from_secs(10)).await;
        assert_ne!(leader, 0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Some(status) = c.node_mut(0).exited() {
            panic!(
                "node 0 exited ({status}) instead of waiting to be replaced:\n{}",
                c.node(0).log_tail()
            );
        }
        let s = c.node(0).status().await.unwrap();
        assert_eq!(s.last_log_index, None, "{s:?}");
        let log =
            String::from_utf8_lossy(&std::fs::read(&c.node(0).log).unwrap()[earlier..]).to_string();
        assert!(
            log.contains("It will not initialize another cluster")
                && !log.contains("initializing a new cluster"),
            "node 0 did not refuse to start a second cluster:\n{log}"
        );

        // Replace it like any other node: remove, add back, promote.
        let mut admin = c.node(leader).admin().await;
        admin
            .remove(eventstore::proto::peer::NodeRequest { node_id: 0 })
            .await
            .unwrap();
        let mut r = tonic::Request::new(eventstore::proto::peer::AddLearnerRequest {
            node_id: 0,
            addr: c.node(0).peer_addr(),
        });
        r.set_timeout(Duration::from_secs(15));
        admin.add_learner(r).await.unwrap();
        admin
            .promote(eventstore::proto::peer::NodeRequest { node_id: 0 })
            .await
            .unwrap();
        c.node(0).wait_ready(Duration::from_secs(30)).await;
        let mut fc = c.node(0).client().await;
        for i in 0..10 {
            fc.load(load_req(global(&format!("k{i}")))).await.unwrap();
        }
        let s = c.node(leader).status().await.unwrap();
        assert_eq!(s.members.iter().filter(|m| m.voter).count(), 3, "{s:?}");
        assert_same_state(&converged(&c, Duration::from_secs(30)).await);
        // And it restarts with its new data like any member, and leads.
        c.node_mut(0).kill9();
        c.node_mut(0).start();
        c.node(0).wait_ready(Duration::from_secs(30)).await;
        make_leader(&c, 0).await;
        let mut fc = c.node(0).client().await;
        for i in 0..10 {
            fc.load(load_req(global(&format!("k{i}")))).await.unwrap();
        }
    })
    .await;
}

/// Starts a fourth node and adds it as a learner: it follows the leader
/// (and relays to it) but never votes or campaigns.
async fn add_learner_node(c: &mut Cluster) -> u64 {
    let mut ids_ports: BTreeMap<u64, u16> = c.nodes.iter().map(|n| (n.id, n.peer_port)).collect();
    let (id, p, pp) = (3u64, free_port(), free_port());
    ids_ports.insert(id, pp);
    let flag = Cluster::peers_flag(&ids_ports);
    let mut s = Server::new(id, p, pp, c.dir.path(), Some(&flag), &[]);
    s.start();
    c.nodes.push(s);
    let leader = c.leader(Duration::from_secs(10)).await;
    c.node(leader)
        .admin()
        .await
        .add_learner(eventstore::proto::peer::AddLearnerRequest {
            node_id: id,
            addr: format!("127.0.0.1:{pp}"),
        })
        .await
        .unwrap();
    c.node(id).wait_ready(Duration::from_secs(30)).await;
    id
}

#[tokio::test]
async fn a_definite_refusal_from_the_leader_stays_definite_when_relayed() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let learner = add_learner_node(&mut c).await;
        let leader = c.leader(Duration::from_secs(10)).await;
        let voters: Vec<u64> = (0..3).filter(|i| *i != leader).collect();
        for v in voters {
            c.node_mut(v).kill9();
        }
        // Past its lease the leader knows it has no quorum and refuses
        // writes before proposing them; the learner still follows it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut via_learner = c.node(learner).client().await;
        let mut r = tonic::Request::new(save_req(global("k"), b"v", 60));
        r.set_timeout(Duration::from_secs(3));
        let st = via_learner.save(r).await.unwrap_err();
        println!("relayed refusal: {:?}: {}", st.code(), st.message());
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(
            !st.message().starts_with(eventstore::api::OUTCOME_UNKNOWN),
            "the leader's definite refusal was relabelled: {st:?}"
        );
        assert!(st.message().contains("nothing was applied"), "{st:?}");
    })
    .await;
}

/// The leader, a follower, and a client of that follower through which
/// key "k" was saved and loaded (so its relay connection is open).
async fn relaying_follower(
    c: &Cluster,
) -> (
    u64,
    u64,
    eventstore::proto::protob::event_store_client::EventStoreClient<tonic::transport::Channel>,
) {
    let leader = c.leader(Duration::from_secs(10)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let mut via_follower = c.node(follower).client().await;
    via_follower
        .save(save_req(global("k"), b"v", 600))
        .await
        .unwrap();
    via_follower.load(load_req(global("k"))).await.unwrap();
    (leader, follower, via_follower)
}

/// `msg` with a gRPC deadline of `secs` seconds.
fn with_timeout<T>(msg: T, secs: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_secs(secs));
    r
}

/// A follower relaying to a leader that stops answering without closing
/// its connections (here paused with SIGSTOP; a host or network that dies
/// does the same) gives that relay up as soon as it learns of a new leader,
/// and serves the request there, instead of waiting until the connection is
/// found dead (HTTP/2 keep-alive: 1-2 s) or the deadline passes. The
/// timeouts are short so that the election (about 0.2 s) is far from the
/// keep-alive.
#[tokio::test]
async fn a_relay_to_a_leader_that_stops_answering_moves_to_the_new_leader() {
    let c = Cluster::start(
        3,
        &[
            "--heartbeat-ms",
            "20",
            "--election-timeout-min-ms",
            "60",
            "--election-timeout-max-ms",
            "100",
        ],
    )
    .await;
    bounded(LIMIT, async {
        let (leader, follower, mut via_follower) = relaying_follower(&c).await;
        c.node(leader).signal(Signal::SIGSTOP);
        let start = Instant::now();
        let got = via_follower
            .load(with_timeout(load_req(global("k")), 5))
            .await;
        let took = start.elapsed();
        println!(
            "load via {follower} after leader {leader} stopped answering: {got:?} after {took:?}"
        );
        assert_eq!(&got.expect("the relayed load").into_inner().value[..], b"v");
        assert!(
            took < Duration::from_millis(800),
            "the relay waited {took:?} for the stopped leader"
        );
        c.node(leader).signal(Signal::SIGCONT);
    })
    .await;
}

#[tokio::test]
async fn a_relayed_load_is_retried_on_the_new_leader_after_the_old_one_died() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let (leader, follower, mut via_follower) = relaying_follower(&c).await;
        c.node_mut(leader).kill9();
        // The follower still takes the dead node for the leader: its relay
        // is refused until a new leader is elected.
        let start = Instant::now();
        let got = via_follower
            .load(with_timeout(load_req(global("k")), 5))
            .await;
        let took = start.elapsed();
        println!("load via {follower} after leader {leader} died: {got:?} after {took:?}");
        assert_eq!(&got.expect("the relayed load").into_inner().value[..], b"v");
        // It waited for the election (lease 800 ms, then one election
        // timeout of 400-800 ms and a vote), not for its deadline.
        assert!(took < Duration::from_millis(2500), "took {took:?}");
    })
    .await;
}
