//! A node that was removed from the cluster: how it learns so, and what it
//! does then.
//!
//! It learns it in one of two ways: the membership it holds (the last one
//! it received from the leader) no longer includes it, or, when the leader
//! stopped sending it the log before it received that membership, the
//! leader refuses its vote request because it is not a member (see
//! [`crate::server::peer`] and [`crate::raft::network::Removal`]).
//!
//! From then on it takes part in no election, reports NOT_SERVING, shows
//! `Removed` in `cluster status`, and refuses client requests with
//! FAILED_PRECONDITION ("this node was removed from the cluster; stop it").
//! Should the leader add it back under its id (a membership that includes
//! it, newer than the one it held when it learned of the removal), it
//! serves again.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::node::{Node, REMOVED_MESSAGE};
use super::vote_guard::VoteGuard;
use crate::raft::types::LogId;

/// How often the removal state is checked besides membership changes.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// How long the membership this node holds must leave it out before the
/// node takes itself for removed.
const UNLISTED_FOR: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true.
pub async fn watch_removal(node: Arc<Node>, guard: VoteGuard, mut stop: watch::Receiver<bool>) {
    let mut rx = node.raft.metrics();
    // The membership this node held when it learned of its removal.
    let mut removed_at: Option<Option<LogId>> = None;
    // Whether a membership this node held listed it.
    let mut was_listed = false;
    // Since when the membership this node holds has not listed it.
    let mut unlisted_since: Option<Instant> = None;
    loop {
        {
            let m = rx.borrow_watched().clone();
            let stored = m.membership_config.clone();
            let membership = stored.membership();
            let listed = membership.get_node(&node.id).is_some();
            let has_members = membership.nodes().next().is_some();
            was_listed |= listed;
            // A node that is catching up applies older memberships that
            // do not list it yet, while the leader is sending it the log:
            // that is not a removal. A membership without this node counts
            // once this node was listed in one, or when no leader is
            // sending it anything (a removed node that restarted).
            // And it must last: the next entries of a node catching up
            // soon bring a membership that lists it.
            let unlisted = has_members && !listed && (was_listed || !node.leader_in_touch());
            unlisted_since = if unlisted {
                unlisted_since.or(Some(Instant::now()))
            } else {
                None
            };
            if unlisted_since.is_some_and(|t| t.elapsed() >= UNLISTED_FOR) {
                node.removal.set(format!(
                    "the membership at log index {} does not include node {}",
                    stored.log_id().map(|l| l.index).unwrap_or(0),
                    node.id
                ));
            }
            match (node.removal.reason(), &removed_at) {
                (Some(why), None) => {
                    removed_at = Some(*stored.log_id());
                    node.raft.runtime_config().elect(false);
                    tracing::error!(
                        node = node.id,
                        "{REMOVED_MESSAGE}: {why}. It takes part in no election and refuses \
                         client requests (README: Cluster administration)"
                    );
                }
                (Some(_), Some(at)) if listed && stored.log_id() != at => {
                    node.removal.clear();
                    removed_at = None;
                    if !guard.refusing() {
                        node.raft.runtime_config().elect(true);
                    }
                    tracing::info!(node = node.id, "this node was added back to the cluster");
                }
                // Keep elections off, whatever else turned them on.
                (Some(_), Some(_)) => node.raft.runtime_config().elect(false),
                (None, _) => {}
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}
