//! The purger: on the leader, proposes `Purge` entries that remove expired
//! values and expired request-id records, in bounded batches, so every replica deletes the same keys at the
//! same log position. Reads never depend on it: a value past its deadline
//! is hidden whether or not it has been purged yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::node::{Local, Node};
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
        let stamp = node.stamp();
        let clock = match node.keyspace.clock() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the replicated clock failed");
                return total;
            }
        };
        match node.keyspace.has_expired(clock.max(stamp.time_ms())) {
            Ok(true) => {}
            Ok(false) => return total,
            Err(e) => {
                tracing::warn!(error = %e, "reading the expiry index failed");
                return total;
            }
        }
        let limit = node.expiry.purge_batch;
        let deadline = Instant::now() + Duration::from_secs(10);
        match node.write(Command::Purge { stamp, limit }, deadline).await {
            Ok(Applied::Purged { count, sessions }) => {
                total += u64::from(count);
                tracing::debug!(count, sessions, "purged expired values and request ids");
                if count < limit && sessions < limit {
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
