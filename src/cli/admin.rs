//! `eventstore cluster ...`: membership administration and status, over the
//! `Admin` service on a node's peer port.
//!
//! `add-learner` returns once the learner holds every entry the leader
//! held when it was added, and `transfer-leader` once the target leads;
//! both within `--timeout`, and both print the state after. A refusal
//! (not the leader, not a member, not a voter, already the leader) is
//! printed with its reason and exits non-zero.

use std::time::Duration;

use clap::{Args, Subcommand};
use tonic::transport::Channel;

use super::client::parse_duration;
use super::connect::{connect, Connected, Failure, Port, TlsArgs};
use crate::proto::peer::admin_client::AdminClient;
use crate::proto::peer::{AddLearnerRequest, Member, NodeRequest, StatusRequest, StatusResponse};
use crate::server::peer::ID_REUSE_RULE;

/// Where to send an admin command.
#[derive(Debug, Args)]
pub struct Target {
    /// A node's peer address: `HOST:PORT`, or `HOST` alone for port 9090.
    #[arg(
        long,
        env = "EVENTSTORE_ADMIN_SERVER",
        default_value = "127.0.0.1:9090"
    )]
    pub server: String,
    /// TLS to the peer port (with peer mTLS on, a certificate from the
    /// cluster CA: --ca, --cert and --key).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up after this long: `60s`, `500ms`, `2m`... (add-learner and
    /// transfer-leader wait up to this long for what they promise).
    #[arg(long, env = "EVENTSTORE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, members, leader, term, log indexes, lag and
    /// the state digest.
    Status(Target),
    /// Add a node as a learner (it receives the log but does not vote);
    /// returns once it holds every entry the leader held when it was added
    /// (within --timeout), and prints the members after.
    #[command(after_help = ID_REUSE_RULE)]
    AddLearner {
        /// Where to send the command.
        #[command(flatten)]
        target: Target,
        /// The new node's id: a new id, or the id of a member removed with
        /// `cluster remove` (the node must then start with an empty data
        /// directory).
        #[arg(long)]
        node_id: u64,
        /// The new node's peer address, HOST:PORT.
        #[arg(long)]
        addr: String,
    },
    /// Make a learner a voter (joint consensus).
    Promote {
        /// Where to send the command.
        #[command(flatten)]
        target: Target,
        /// The learner's id.
        #[arg(long)]
        node_id: u64,
    },
    /// Remove a voter or learner from the cluster (joint consensus).
    Remove {
        /// Where to send the command.
        #[command(flatten)]
        target: Target,
        /// The node's id.
        #[arg(long)]
        node_id: u64,
    },
    /// Hand leadership to another voter; returns once it leads (within
    /// --timeout) and prints the state after.
    TransferLeader {
        /// Where to send the command.
        #[command(flatten)]
        target: Target,
        /// The voter that should become leader.
        #[arg(long)]
        node_id: u64,
    },
}

async fn admin(t: &Target) -> Result<(AdminClient<Channel>, Connected), Failure> {
    let c = connect(
        &t.server,
        Port::Peer,
        t.timeout.min(Duration::from_secs(5)),
        &t.tls.files(),
    )
    .await?;
    Ok((AdminClient::new(c.channel.clone()), c))
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

fn member_json(m: &Member) -> serde_json::Value {
    serde_json::json!({
        "id": m.id, "addr": m.addr, "voter": m.voter, "matched": m.matched, "lag": m.lag,
    })
}

fn status_json(s: &StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "node_id": s.node_id,
        "leader_id": s.leader_id,
        "term": s.term,
        "state": s.state,
        "last_log_index": s.last_log_index,
        "committed": s.committed,
        "applied": s.applied,
        "snapshot_index": s.snapshot_index,
        "purged_index": s.purged_index,
        "members": s.members.iter().map(member_json).collect::<Vec<_>>(),
        "digest": s.digest,
        "keys": s.keys,
        "health": s.health,
        "cluster_id": s.cluster_id,
    })
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn print_members(members: &[Member]) {
    println!(
        "{:<6} {:<8} {:<32} {:>10} {:>8}",
        "ID", "ROLE", "ADDRESS", "MATCHED", "LAG"
    );
    for m in members {
        println!(
            "{:<6} {:<8} {:<32} {:>10} {:>8}",
            m.id,
            if m.voter { "voter" } else { "learner" },
            m.addr,
            opt(m.matched),
            opt(m.lag)
        );
    }
}

fn print_status(s: &StatusResponse) {
    if s.state == "Removed" {
        println!(
            "node:      {} (Removed: this node was removed from the cluster; stop it)",
            s.node_id
        );
    } else {
        println!("node:      {} ({})", s.node_id, s.state);
    }
    println!("health:    {}", s.health);
    if s.cluster_id.is_empty() {
        println!("cluster:   - (none yet: waiting for a leader to replicate to this node)");
    } else {
        println!("cluster:   {}", s.cluster_id);
    }
    println!("leader:    {}", opt(s.leader_id));
    println!("term:      {}", s.term);
    println!(
        "log:       last {} committed {} applied {} snapshot {} purged {}",
        opt(s.last_log_index),
        opt(s.committed),
        opt(s.applied),
        opt(s.snapshot_index),
        opt(s.purged_index)
    );
    println!("keys:      {}", s.keys);
    println!("digest:    {}", s.digest);
    print_members(&s.members);
}

/// Runs a `cluster` subcommand; returns the exit code.
pub async fn run(cmd: ClusterCommand) -> i32 {
    let result = async {
        match cmd {
            ClusterCommand::Status(t) => {
                let (mut a, c) = admin(&t).await?;
                let s = match a.status(request(StatusRequest {}, t.timeout)).await {
                    Ok(s) => s.into_inner(),
                    Err(e) => return Err(c.explain(&e, "the admin service").await),
                };
                show_status(&s, t.json);
            }
            ClusterCommand::TransferLeader { target, node_id } => {
                let (mut a, c) = admin(&target).await?;
                let s = match a
                    .transfer_leader(request(NodeRequest { node_id }, target.timeout))
                    .await
                {
                    Ok(s) => s.into_inner(),
                    Err(e) => return Err(c.explain(&e, "the admin service").await),
                };
                show_status(&s, target.json);
            }
            ClusterCommand::AddLearner {
                target,
                node_id,
                addr,
            } => {
                let (mut a, c) = admin(&target).await?;
                let r = match a
                    .add_learner(request(AddLearnerRequest { node_id, addr }, target.timeout))
                    .await
                {
                    Ok(r) => r.into_inner(),
                    Err(e) => return Err(c.explain(&e, "the admin service").await),
                };
                show_members(&r.members, target.json);
            }
            ClusterCommand::Promote { target, node_id } => {
                let (mut a, c) = admin(&target).await?;
                let r = match a
                    .promote(request(NodeRequest { node_id }, target.timeout))
                    .await
                {
                    Ok(r) => r.into_inner(),
                    Err(e) => return Err(c.explain(&e, "the admin service").await),
                };
                show_members(&r.members, target.json);
            }
            ClusterCommand::Remove { target, node_id } => {
                let (mut a, c) = admin(&target).await?;
                let r = match a
                    .remove(request(NodeRequest { node_id }, target.timeout))
                    .await
                {
                    Ok(r) => r.into_inner(),
                    Err(e) => return Err(c.explain(&e, "the admin service").await),
                };
                show_members(&r.members, target.json);
            }
        }
        Ok::<(), Failure>(())
    }
    .await;
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

fn show_status(s: &StatusResponse, json: bool) {
    if json {
        println!("{}", status_json(s));
    } else {
        print_status(s);
    }
}

fn show_members(members: &[Member], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::Value::Array(members.iter().map(member_json).collect())
        );
    } else {
        print_members(members);
    }
}
