//! The registrar: on the leader, records each member's incarnation (the
//! random identity of its data directory) in the replicated state, once,
//! as soon as the member has answered. From then on every Raft message to
//! that member carries the recorded incarnation, and a member that comes
//! back with a wiped data directory refuses to rejoin (see
//! [`crate::server::peer`]).
//!
//! It also records the cluster id in the replicated state when none is on
//! record: the id this leader keeps in its data directory (chosen when the
//! cluster was initialized), or, in a cluster whose data directories come
//! from a version without cluster ids, a new random one, which every node
//! adopts when it applies it.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::node::{Local, Node};
use crate::store::Command;

/// Runs until `shutdown` turns true.
pub async fn run_registrar(node: Arc<Node>, shutdown: watch::Receiver<bool>) {
    node.every_tick_as_leader(Duration::from_millis(500), shutdown, || async {
        record_cluster_id(&node).await;
        register_members(&node).await;
    })
    .await;
}

/// Records the cluster id in the replicated state if none is on record.
async fn record_cluster_id(node: &Node) {
    match node.keyspace.cluster_id() {
        Ok(None) => {}
        Ok(Some(_)) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading the replicated cluster id failed");
            return;
        }
    }
    // Not kept locally here: a leader without an id adopts the recorded
    // one when it applies it, like every other node, so a leader that
    // fails before its entry commits leaves no id behind.
    let id = node
        .cluster_id
        .get()
        .unwrap_or_else(crate::random::nonzero_u64);
    let deadline = Instant::now() + Duration::from_secs(5);
    match node.write(Command::SetClusterId { id }, deadline).await {
        Ok(crate::store::Applied::ClusterId { recorded: true }) => tracing::info!(
            cluster_id = %crate::store::cluster_id::format_id(id),
            "cluster id recorded in the replicated state"
        ),
        Ok(_) => {}
        Err(Local::NotLeader(_)) => {}
        Err(Local::Failed(e)) => tracing::debug!(error = %e, "recording the cluster id failed"),
    }
}

/// Records the incarnation of every member that has none on record and has
/// answered recently.
async fn register_members(node: &Node) {
    let members: Vec<u64> = node
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    for id in members {
        match node.keyspace.member_incarnation(id) {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the member registry failed");
                continue;
            }
        }
        let seen = if id == node.id {
            Some(node.incarnation)
        } else {
            // Only a fresh answer: an old one may come from a member that
            // has since been removed and replaced under its id.
            node.observed.recent(id, Duration::from_secs(1))
        };
        let Some(incarnation) = seen else { continue };
        let deadline = Instant::now() + Duration::from_secs(5);
        match node
            .write(
                Command::Register {
                    node: id,
                    incarnation,
                },
                deadline,
            )
            .await
        {
            Ok(_) => tracing::info!(
                node = id,
                incarnation = %format!("{incarnation:x}"),
                "member registered"
            ),
            Err(Local::NotLeader(_)) => return,
            Err(Local::Failed(e)) => tracing::debug!(error = %e, "registering a member failed"),
        }
    }
}
