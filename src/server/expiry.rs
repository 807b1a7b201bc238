//! The purger: on the leader, proposes `Purge` entries that remove expired
//! values, in bounded batches, so every replica deletes the same keys at the
//! same log position. Reads never depend on it: a value past its deadline
//! is hidden whether or not it has been purged yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::node::{now_ms, Local, Node};
use crate::store::{Applied, Command};

/// Runs until `shutdown` turns true.
pub async fn run_purger(node: Arc<Node>, shutdown: watch::Receiver<bool>) {
    node.every_tick_as_leader(node.expiry.purge_interval, shutdown, || async {
        purge_expired(&node).await;
    })
    .await;
}

/// Proposes purges until nothing expired is left (or a proposal fails).
/// Returns how many values were removed.
pub async fn purge_expired(node: &Node) -> u64 {
    let mut total = 0u64;
    loop {
        let now = now_ms();
        match node.keyspace.has_expired(now) {
            Ok(true) => {}
            Ok(false) => return total,
            Err(e) => {
                tracing::warn!(error = %e, "reading the expiry index failed");
                return total;
            }
        }
        let limit = node.expiry.purge_batch;
        let deadline = Instant::now() + Duration::from_secs(10);
        match node
            .write(Command::Purge { now_ms: now, limit }, deadline)
            .await
        {
            Ok(Applied::Purged { count }) => {
                total += u64::from(count);
                tracing::debug!(count, "purged expired values");
                if count < limit {
                    return total;
                }
                // Let client writes in between large purges.
                tokio::task::yield_now().await;
            }
            Ok(other) => {
                tracing::warn!(?other, "unexpected result of a purge");
                return total;
            }
            Err(Local::NotLeader(_)) => return total,
            Err(Local::Failed(e)) => {
                tracing::debug!(error = %e, "purge not applied");
                return total;
            }
        }
    }
}
