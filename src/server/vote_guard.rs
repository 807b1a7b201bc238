//! The vote guard: for one maximum election timeout after it starts, a node
//! grants no vote and no pre-vote, and does not campaign.
//!
//! A follower that acknowledges a heartbeat promises not to help elect
//! anyone else for the leader lease (the maximum election timeout), and the
//! leader serves reads from that promise. openraft keeps the promise in
//! memory only: a node that restarts has forgotten it, while the leader
//! still counts the node's last acknowledgement from before the restart.
//! That acknowledgement was sent before this process started, so staying
//! out of every election for one maximum election timeout after start keeps
//! the promise, whatever the node acknowledged before it stopped.
//!
//! Votes are refused by the peer service ([`crate::server::peer`]) before
//! openraft sees them; campaigning is held back through openraft's runtime
//! switch ([`release_elections`]).

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::raft::network::Removal;
use crate::raft::types::{NodeId, Raft};

/// When this node may take part in elections again.
#[derive(Clone, Copy, Debug)]
pub struct VoteGuard {
    until: Instant,
}

impl VoteGuard {
    /// A guard for a node that started at `started`, with the cluster's
    /// maximum election timeout `window`.
    pub fn new(started: Instant, window: Duration) -> Self {
        VoteGuard {
            until: started + window,
        }
    }

    /// Whether this node must still refuse votes and pre-votes.
    pub fn refusing(&self) -> bool {
        Instant::now() < self.until
    }

    /// How long the guard still holds.
    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

/// Lets `raft` (started with elections disabled) campaign once `guard`
/// has passed, or at once when this node is the only voter: then no other
/// node can hold a lease this node granted. Returns early if `stop` turns
/// true, and never lets a node that was removed (`removal`) campaign.
pub async fn release_elections(
    raft: Raft,
    id: NodeId,
    guard: VoteGuard,
    removal: Removal,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let sole_voter = |m: &openraft::RaftMetrics<crate::raft::types::TypeConfig>| {
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        voters == [id]
    };
    loop {
        if sole_voter(&metrics.borrow_watched()) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(guard.until) => break,
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
    if removal.reason().is_some() {
        return;
    }
    tracing::info!("taking part in elections");
    raft.runtime_config().elect(true);
}
