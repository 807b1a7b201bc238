//! `eventstore cluster ...`: membership administration and status, over the
//! `Admin` service on a node's peer port.

use clap::{Args, Subcommand};
use tonic::transport::Channel;

use crate::client::server_uri;
use crate::proto::peer::admin_client::AdminClient;
use crate::proto::peer::{AddLearnerRequest, Member, NodeRequest, StatusRequest, StatusResponse};

/// Where to send an admin command.
#[derive(Debug, Args)]
pub struct Target {
    /// A node's peer address, `HOST:PORT` (default port 9090).
    #[arg(
        long,
        env = "EVENTSTORE_ADMIN_SERVER",
        default_value = "127.0.0.1:9090"
    )]
    pub server: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show members, leader, term, log indexes, lag and the state digest.
    Status(Target),
    /// Add a node as a learner (it receives the log but does not vote); waits until it caught up.
    AddLearner {
        /// Where to send the command.
        #[command(flatten)]
        target: Target,
        /// The new node's id (never reuse the id of a removed node).
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
    /// Hand leadership to another voter.
    TransferLeader {
        /// Where to send the command.
        #[command(flatten)]
        target: Target,
        /// The voter that should become leader.
        #[arg(long)]
        node_id: u64,
    },
}

async fn connect(server: &str) -> Result<AdminClient<Channel>, String> {
    let uri = server_uri(server).map_err(|e| e.to_string())?;
    let ch = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting to {server}: {e}"))?;
    Ok(AdminClient::new(ch))
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
    println!("node:      {} ({})", s.node_id, s.state);
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
                let s = connect(&t.server)
                    .await?
                    .status(StatusRequest {})
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                show_status(&s, t.json);
            }
            ClusterCommand::TransferLeader { target, node_id } => {
                let s = connect(&target.server)
                    .await?
                    .transfer_leader(NodeRequest { node_id })
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                show_status(&s, target.json);
            }
            ClusterCommand::AddLearner {
                target,
                node_id,
                addr,
            } => {
                let r = connect(&target.server)
                    .await?
                    .add_learner(AddLearnerRequest { node_id, addr })
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                show_members(&r.members, target.json);
            }
            ClusterCommand::Promote { target, node_id } => {
                let r = connect(&target.server)
                    .await?
                    .promote(NodeRequest { node_id })
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                show_members(&r.members, target.json);
            }
            ClusterCommand::Remove { target, node_id } => {
                let r = connect(&target.server)
                    .await?
                    .remove(NodeRequest { node_id })
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                show_members(&r.members, target.json);
            }
        }
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
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
