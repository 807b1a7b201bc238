//! The compose cluster under test: its containers (found by compose
//! labels), docker actions on them, node status over the admin API and
//! health over the standard gRPC health service. Every address used is on
//! 127.0.0.1 (the ports compose publishes).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use eventstore::proto::peer::admin_client::AdminClient;
use eventstore::proto::peer::{StatusRequest, StatusResponse};

/// One node of the compose cluster.
#[derive(Clone, Debug)]
pub struct Node {
    /// Raft node id (compose service `eventstore-<id>`).
    pub id: u32,
    /// Compose service name, also the node's alias on the cluster network.
    pub service: String,
    /// Docker container name.
    pub container: String,
    /// Client gRPC address on the host.
    pub client_addr: String,
    /// Peer/admin gRPC address on the host.
    pub admin_addr: String,
}

/// The cluster: three nodes on one docker network.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The nodes, by id.
    pub nodes: Vec<Node>,
    /// The docker network the nodes talk over.
    pub network: String,
}

/// Runs `docker ARGS`, returning trimmed stdout; fails with stderr.
pub async fn docker(args: &[&str], timeout: Duration) -> Result<String> {
    let out = tokio::time::timeout(
        timeout,
        Command::new("docker")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("docker {} timed out after {timeout:?}", args.join(" ")))?
    .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

const DOCKER_TIMEOUT: Duration = Duration::from_secs(20);

impl Cluster {
    /// Finds the containers of compose project `project` (services
    /// `eventstore-0..2`) and their network. Client ports are
    /// 127.0.0.1:`client_base + id`, admin ports 127.0.0.1:`admin_base + id`.
    pub async fn discover(project: &str, client_base: u16, admin_base: u16) -> Result<Cluster> {
        let mut nodes = Vec::new();
        let mut network = String::new();
        for id in 0..3u32 {
            let service = format!("eventstore-{id}");
            let names = docker(
                &[
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=com.docker.compose.project={project}"),
                    "--filter",
                    &format!("label=com.docker.compose.service={service}"),
                    "--format",
                    "{{.Names}}",
                ],
                DOCKER_TIMEOUT,
            )
            .await?;
            let Some(container) = names.lines().next().map(str::to_string) else {
                bail!("no container for service {service} of compose project {project} (is the cluster up?)");
            };
            if network.is_empty() {
                let nets = docker(
                    &[
                        "inspect",
                        "--format",
                        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                        &container,
                    ],
                    DOCKER_TIMEOUT,
                )
                .await?;
                network = nets
                    .split_whitespace()
                    .find(|n| n.starts_with(project))
                    .or_else(|| nets.split_whitespace().next())
                    .map(str::to_string)
                    .with_context(|| format!("container {container} is on no network"))?;
            }
            nodes.push(Node {
                id,
                service,
                container,
                client_addr: format!("127.0.0.1:{}", client_base + id as u16),
                admin_addr: format!("127.0.0.1:{}", admin_base + id as u16),
            });
        }
        Ok(Cluster { nodes, network })
    }

    /// The node with this id.
    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    /// `docker kill` (SIGKILL).
    pub async fn kill(&self, id: u32) -> Result<()> {
        docker(&["kill", &self.node(id).container], DOCKER_TIMEOUT)
            .await
            .map(drop)
    }

    /// `docker start`.
    pub async fn start(&self, id: u32) -> Result<()> {
        docker(&["start", &self.node(id).container], DOCKER_TIMEOUT)
            .await
            .map(drop)
    }

    /// `docker stop -t 30` (SIGTERM, then SIGKILL after 30 s).
    pub async fn stop(&self, id: u32) -> Result<()> {
        docker(
            &["stop", "-t", "30", &self.node(id).container],
            Duration::from_secs(45),
        )
        .await
        .map(drop)
    }

    /// `docker pause` (freezes every process of the container).
    pub async fn pause(&self, id: u32) -> Result<()> {
        docker(&["pause", &self.node(id).container], DOCKER_TIMEOUT)
            .await
            .map(drop)
    }

    /// `docker unpause`.
    pub async fn unpause(&self, id: u32) -> Result<()> {
        docker(&["unpause", &self.node(id).container], DOCKER_TIMEOUT)
            .await
            .map(drop)
    }

    /// Cuts the node off the cluster network (its published ports stop
    /// answering too).
    pub async fn disconnect(&self, id: u32) -> Result<()> {
        docker(
            &[
                "network",
                "disconnect",
                &self.network,
                &self.node(id).container,
            ],
            DOCKER_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Reconnects the node, with its service name as alias so that peers
    /// resolve it again.
    pub async fn connect(&self, id: u32) -> Result<()> {
        let n = self.node(id);
        docker(
            &[
                "network",
                "connect",
                "--alias",
                &n.service,
                &self.network,
                &n.container,
            ],
            DOCKER_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Best effort: every node running, unpaused and on the network. Used
    /// after a scenario failed half-way.
    pub async fn heal_all(&self) {
        for n in &self.nodes {
            let state = docker(
                &[
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                    &n.container,
                ],
                DOCKER_TIMEOUT,
            )
            .await
            .unwrap_or_default();
            let mut words = state.split_whitespace();
            let status = words.next().unwrap_or("");
            let on_net = words.any(|w| w == self.network);
            if status == "paused" {
                let _ = self.unpause(n.id).await;
            }
            if !on_net {
                let _ = self.connect(n.id).await;
            }
            if status == "exited" || status == "created" {
                let _ = self.start(n.id).await;
            }
        }
    }

    /// Status of node `id` from its admin API (`timeout` bounds the call).
    pub async fn status(&self, id: u32, timeout: Duration) -> Result<StatusResponse> {
        let addr = &self.node(id).admin_addr;
        let fut = async {
            let ch = endpoint(addr, timeout)?.connect().await?;
            let mut req = tonic::Request::new(StatusRequest {});
            req.set_timeout(timeout);
            let resp = AdminClient::new(ch).status(req).await?;
            Ok::<_, anyhow::Error>(resp.into_inner())
        };
        tokio::time::timeout(timeout, fut)
            .await
            .with_context(|| format!("status of node {id}: no answer within {timeout:?}"))?
            .with_context(|| format!("status of node {id}"))
    }

    /// The current leader: a node that reports itself leader, with the
    /// highest term if several do, and that the other reachable nodes do
    /// not contradict. Waits up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut best: Option<(u64, u32)> = None;
            let mut others = Vec::new();
            for n in &self.nodes {
                if let Ok(s) = self.status(n.id, Duration::from_millis(800)).await {
                    if s.state == "Leader" && best.is_none_or(|b| s.term > b.0) {
                        best = Some((s.term, n.id));
                    }
                    others.push((s.term, s.leader_id));
                }
            }
            if let Some((term, id)) = best {
                let contradicted = others
                    .iter()
                    .any(|(t, l)| *t > term || (*t == term && l.is_some_and(|l| l != id as u64)));
                if !contradicted {
                    return Ok(id);
                }
            }
            if Instant::now() >= deadline {
                bail!("no leader found within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Is node `id` SERVING (standard gRPC health on its client port)?
    pub async fn healthy(&self, id: u32) -> bool {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let timeout = Duration::from_millis(800);
        let addr = &self.node(id).client_addr;
        let fut = async {
            let ch = endpoint(addr, timeout)?.connect().await?;
            let resp = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            Ok::<_, anyhow::Error>(resp.into_inner().status == ServingStatus::Serving as i32)
        };
        matches!(tokio::time::timeout(timeout, fut).await, Ok(Ok(true)))
    }

    /// Waits until all nodes are SERVING; returns how long that took.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let mut all = true;
            for n in &self.nodes {
                if !self.healthy(n.id).await {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                bail!("not all nodes SERVING after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An endpoint for `addr` (`host:port`) with short connect and keep-alive
/// timeouts, so that dead connections are noticed and replaced.
pub fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true))
}

/// A lazily connected channel to `addr`.
pub fn lazy_channel(addr: &str) -> Result<Channel> {
    Ok(endpoint(addr, Duration::from_millis(500))?.connect_lazy())
}
