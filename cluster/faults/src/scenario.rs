//! The fault scenarios. Each runs on the same cluster with the workload
//! going: a baseline, the fault, a hold, the heal, a wait until every node
//! is SERVING again, and a settle period.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::cluster::Cluster;
use super::workload::Recorder;

/// The scenarios, in the order they run by default.
pub const ALL: &[&str] = &[
    "kill-follower",
    "kill-leader",
    "pause-leader",
    "partition-leader",
    "partition-follower",
    "rolling-restart",
];

/// Does scenario `kind` take the leader away, so that it must end with a
/// new leader (a higher term)? `kill-leader`, `pause-leader` (longer than
/// a failover), `partition-leader` and `rolling-restart` (which stops the
/// leader last) do; the follower scenarios do not.
pub fn replaces_leader(kind: &str) -> bool {
    matches!(
        kind,
        "kill-leader" | "pause-leader" | "partition-leader" | "rolling-restart"
    )
}

/// Durations of a scenario's steps.
#[derive(Clone, Debug, Serialize)]
pub struct Timings {
    /// Workload alone before the fault.
    pub baseline: Duration,
    /// How long a killed node stays down / a partition lasts.
    pub hold: Duration,
    /// How long a paused node stays frozen (past the election timeout).
    pub pause: Duration,
    /// Workload after the cluster is healthy again.
    pub settle: Duration,
    /// Longest wait for every node to be SERVING after a heal.
    pub recover_timeout: Duration,
}

/// Something the runner did to the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When the action started (ns since the run started).
    pub t_ns: u64,
    /// When it returned.
    pub done_ns: u64,
    /// `inject`, `heal` or `info`.
    pub kind: String,
    /// Short label, e.g. `kill n1 (leader)`.
    pub label: String,
    /// The node acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
}

/// What happened in one scenario run.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioRun {
    /// Scenario name (also the phase name of its operations).
    pub name: String,
    /// Start of the scenario (ns since the run started).
    pub start_ns: u64,
    /// End of the scenario.
    pub end_ns: u64,
    /// Actions taken, in order.
    pub events: Vec<Event>,
    /// Leader before the fault.
    pub leader_before: Option<u32>,
    /// Leader at the end.
    pub leader_after: Option<u32>,
    /// From the (last) heal until every node was SERVING, in seconds.
    pub recovery_secs: Option<f64>,
    /// Why the scenario could not be carried out (it then fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Ctx<'a> {
    cluster: &'a Cluster,
    rec: &'a Recorder,
    run: ScenarioRun,
}

impl Ctx<'_> {
    async fn act<F, Fut>(&mut self, kind: &str, label: String, node: u32, f: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let t_ns = self.rec.now_ns();
        let res = f().await;
        let done_ns = self.rec.now_ns();
        eprintln!(
            "[{:7.2}s] {}: {label}{}",
            t_ns as f64 / 1e9,
            self.run.name,
            if res.is_err() { " (failed)" } else { "" }
        );
        self.run.events.push(Event {
            t_ns,
            done_ns,
            kind: kind.into(),
            label,
            node: Some(node),
        });
        res
    }

    async fn recover(&mut self, timeout: Duration) -> Result<()> {
        let took = self.cluster.wait_healthy(timeout).await?;
        self.run.recovery_secs = Some(took.as_secs_f64());
        Ok(())
    }
}

/// Runs scenario `kind` (one of [`ALL`]) as phase `name`; `round`
/// (0-based) rotates which follower a follower fault hits.
pub async fn run(
    kind: &str,
    name: &str,
    round: usize,
    cluster: &Cluster,
    rec: &Recorder,
    t: &Timings,
) -> ScenarioRun {
    let mut ctx = Ctx {
        cluster,
        rec,
        run: ScenarioRun {
            name: name.to_string(),
            start_ns: rec.now_ns(),
            end_ns: 0,
            events: Vec::new(),
            leader_before: None,
            leader_after: None,
            recovery_secs: None,
            error: None,
        },
    };
    tokio::time::sleep(t.baseline).await;
    if let Err(e) = inject_and_heal(kind, round, &mut ctx, t).await {
        eprintln!("{name}: {e:#}");
        ctx.run.error = Some(format!("{e:#}"));
        cluster.heal_all().await;
        let _ = ctx.recover(t.recover_timeout).await;
    }
    tokio::time::sleep(t.settle).await;
    ctx.run.leader_after = cluster.leader(Duration::from_secs(5)).await.ok();
    ctx.run.end_ns = rec.now_ns();
    ctx.run
}

async fn inject_and_heal(kind: &str, round: usize, ctx: &mut Ctx<'_>, t: &Timings) -> Result<()> {
    let cluster = ctx.cluster;
    let leader = cluster
        .leader(Duration::from_secs(10))
        .await
        .context("finding the leader")?;
    ctx.run.leader_before = Some(leader);
    let followers: Vec<u32> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != leader)
        .collect();
    // Round 0: kill-follower hits the lower-numbered follower and
    // partition-follower the higher-numbered one; later rounds alternate.
    let first_follower = followers[round % followers.len()];
    let last_follower = followers[(round + 1) % followers.len()];
    match kind {
        "kill-follower" => {
            let f = first_follower;
            ctx.act("inject", format!("kill n{f}"), f, || cluster.kill(f))
                .await?;
            tokio::time::sleep(t.hold).await;
            ctx.act("heal", format!("start n{f}"), f, || cluster.start(f))
                .await?;
        }
        "kill-leader" => {
            ctx.act("inject", format!("kill n{leader} (leader)"), leader, || {
                cluster.kill(leader)
            })
            .await?;
            tokio::time::sleep(t.hold).await;
            ctx.act("heal", format!("start n{leader}"), leader, || {
                cluster.start(leader)
            })
            .await?;
        }
        "pause-leader" => {
            ctx.act(
                "inject",
                format!("pause n{leader} (leader)"),
                leader,
                || cluster.pause(leader),
            )
            .await?;
            tokio::time::sleep(t.pause).await;
            ctx.act("heal", format!("unpause n{leader}"), leader, || {
                cluster.unpause(leader)
            })
            .await?;
        }
        "partition-leader" => {
            ctx.act(
                "inject",
                format!("disconnect n{leader} (leader)"),
                leader,
                || cluster.disconnect(leader),
            )
            .await?;
            tokio::time::sleep(t.hold).await;
            ctx.act("heal", format!("reconnect n{leader}"), leader, || {
                cluster.connect(leader)
            })
            .await?;
        }
        "partition-follower" => {
            let f = last_follower;
            ctx.act("inject", format!("disconnect n{f}"), f, || {
                cluster.disconnect(f)
            })
            .await?;
            tokio::time::sleep(t.hold).await;
            ctx.act("heal", format!("reconnect n{f}"), f, || cluster.connect(f))
                .await?;
        }
        "rolling-restart" => {
            // Followers first, the leader last (it hands over on SIGTERM).
            let order: Vec<u32> = followers.iter().copied().chain([leader]).collect();
            for (i, n) in order.iter().copied().enumerate() {
                let what = if n == leader { " (leader)" } else { "" };
                ctx.act("inject", format!("stop n{n}{what}"), n, || cluster.stop(n))
                    .await?;
                ctx.act("heal", format!("start n{n}"), n, || cluster.start(n))
                    .await?;
                ctx.recover(t.recover_timeout)
                    .await
                    .with_context(|| format!("n{n} after its restart"))?;
                if i + 1 < order.len() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            return Ok(());
        }
        other => anyhow::bail!("unknown scenario {other:?}"),
    }
    ctx.recover(t.recover_timeout)
        .await
        .context("recovering after the heal")
}
