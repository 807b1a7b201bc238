//! Polls every node's admin status during the run, to tell when a leader
//! was elected (as opposed to when clients saw service again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::cluster::Cluster;
use super::workload::Recorder;

/// One poll of one node.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// When the answer arrived (ns since the run started).
    pub t_ns: u64,
    /// The node polled.
    pub node: u32,
    /// Its term.
    pub term: u64,
    /// Its Raft state (`Leader`, `Follower`, `Candidate`, ...).
    pub state: String,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
}

/// A change of the cluster's leader, as seen by the polls: the leader is
/// the node that reports itself leader with the highest term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaderChange {
    /// When it was first seen.
    pub t_ns: u64,
    /// The new leader (`None`: no node reports itself leader).
    pub leader: Option<u32>,
    /// Its term.
    pub term: u64,
}

/// The polling task.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Monitor {
    /// Polls each node every `every` (one task per node, so a frozen node
    /// does not delay the others).
    pub fn start(cluster: &Cluster, rec: Arc<Recorder>, every: Duration) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in &cluster.nodes {
            let (cluster, rec, stop, samples, id) = (
                cluster.clone(),
                rec.clone(),
                stop.clone(),
                samples.clone(),
                n.id,
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(s) = cluster.status(id, Duration::from_millis(500)).await {
                        samples.lock().expect("samples lock").push(Sample {
                            t_ns: rec.now_ns(),
                            node: id,
                            term: s.term,
                            state: s.state,
                            leader_id: s.leader_id,
                        });
                    }
                    tokio::time::sleep(every).await;
                }
            }));
        }
        Monitor {
            stop,
            samples,
            tasks,
        }
    }

    /// Stops polling and returns the samples in time order.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut s = self.samples.lock().expect("samples lock").clone();
        s.sort_by_key(|x| x.t_ns);
        s
    }
}

/// Leader changes over time. A node's latest sample counts until it is
/// older than `stale_ns` (a frozen or cut-off node stops answering); the
/// leader is then the node reporting `Leader` with the highest term.
pub fn leader_changes(samples: &[Sample], stale_ns: u64) -> Vec<LeaderChange> {
    let mut latest: [Option<&Sample>; 3] = [None, None, None];
    let mut out: Vec<LeaderChange> = Vec::new();
    for s in samples {
        if let Some(slot) = latest.get_mut(s.node as usize) {
            *slot = Some(s);
        }
        let now = s.t_ns;
        let leader = latest
            .iter()
            .flatten()
            .filter(|x| now.saturating_sub(x.t_ns) <= stale_ns && x.state == "Leader")
            .max_by_key(|x| x.term)
            .map(|x| (x.node, x.term));
        let change = LeaderChange {
            t_ns: now,
            leader: leader.map(|l| l.0),
            term: leader.map(|l| l.1).unwrap_or(0),
        };
        let differs = out.last().is_none_or(|l| {
            l.leader != change.leader || (change.leader.is_some() && l.term != change.term)
        });
        if differs {
            out.push(change);
        }
    }
    out
}
