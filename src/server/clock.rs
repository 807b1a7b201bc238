//! This node's view of the cluster's time, from which it stamps entries
//! when it leads.
//!
//! The replicated clock (the highest entry time applied) only moves
//! forward, so one entry stamped by a leader whose wall clock jumped ahead
//! would expire everything at once. A [`Timeline`] therefore predicts the
//! cluster time from this node's *monotonic* clock: the replicated clock as
//! it last saw it move (applying an entry another node stamped), plus the
//! monotonic time elapsed since. Every stamp carries both the wall clock and
//! that prediction, and the state machine takes the wall clock only within
//! [`MAX_CLOCK_SKEW_MS`] of the prediction (see [`Stamp::time_ms`]), so the
//! rule is applied from values in the log alone.
//!
//! Entries this node stamped itself do not move its anchor (its stamps are
//! bounded by the anchor, and re-anchoring on them would let the allowance
//! add up), except the first one after it starts when it has seen no other
//! node's stamp: then its wall clock is all it has. Entries replayed from
//! the log at start-up are not observations either: their stamps are old.
//! Nor does a stamp move the prediction back: an entry applied late (a new
//! leader commits its predecessor's last entries seconds after they were
//! stamped) tells that the cluster time was at least its stamp, which the
//! prediction already knows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::raft::types::NodeId;
use crate::store::{ClockSeen, Stamp, MAX_CLOCK_SKEW_MS};

/// How often at most a leader logs that its wall clock is off.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// This node's prediction of the cluster time (see the module docs).
pub struct Timeline {
    node: NodeId,
    /// Entries at or below this index were in the log when the node
    /// started; `u64::MAX` until that is known.
    replayed_through: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The replicated clock as last seen moving, and when (monotonic).
    anchor: Option<(u64, Instant)>,
    /// When the last warning about this node's wall clock was logged.
    warned: Option<Instant>,
}

impl Timeline {
    /// A timeline for node `node` that has seen nothing yet.
    pub fn new(node: NodeId) -> Self {
        Timeline {
            node,
            replayed_through: AtomicU64::new(u64::MAX),
            state: Mutex::default(),
        }
    }

    /// Entries up to `index` were in the log at start-up (`None`: the log
    /// was empty): applying them is not an observation of the present.
    pub fn set_replayed_through(&self, index: Option<u64>) {
        self.replayed_through
            .store(index.unwrap_or(0), Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that applying an entry moved the replicated clock, at
    /// monotonic time `at`.
    pub fn observe(&self, seen: ClockSeen, at: Instant) {
        if seen.index <= self.replayed_through.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.lock();
        let Some((base, since)) = s.anchor else {
            s.anchor = Some((seen.clock_ms, at));
            return;
        };
        if seen.stamped_by == self.node {
            return;
        }
        // A stamp says the cluster time was at least this when it was made;
        // applied late (a new leader committing its predecessor's entries,
        // a follower's backlog), it is older than the present. The time
        // already predicted is a lower bound too: keep the later of the two.
        let elapsed =
            u64::try_from(at.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX);
        if seen.clock_ms > base.saturating_add(elapsed) {
            s.anchor = Some((seen.clock_ms, at));
        }
    }

    /// The cluster time predicted for monotonic time `at`, if this node has
    /// an anchor.
    pub fn predict(&self, at: Instant) -> Option<u64> {
        self.lock().anchor.map(|(base, since)| {
            let elapsed = at.saturating_duration_since(since).as_millis();
            base.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
        })
    }

    /// A stamp for an entry this node proposes, from its wall clock
    /// `wall_ms` read at monotonic time `at`. Logs a warning (at most once a
    /// minute) when the wall clock is more than [`MAX_CLOCK_SKEW_MS`] off
    /// the prediction.
    pub fn stamp(&self, wall_ms: u64, at: Instant) -> Stamp {
        let stamp = Stamp {
            wall_ms,
            timeline_ms: self.predict(at),
            node: self.node,
        };
        if let Some(skew) = stamp.skew_ms() {
            if skew.unsigned_abs() > MAX_CLOCK_SKEW_MS {
                let mut s = self.lock();
                if s.warned
                    .is_none_or(|w| at.saturating_duration_since(w) >= WARN_EVERY)
                {
                    s.warned = Some(at);
                    tracing::warn!(
                        skew_ms = skew,
                        wall_ms,
                        cluster_ms = stamp.timeline_ms,
                        "this node's wall clock is {} s {} the cluster's clock; its stamps are \
                         held within {} ms of the cluster's clock (check NTP on this machine)",
                        skew.unsigned_abs() / 1000,
                        if skew > 0 { "ahead of" } else { "behind" },
                        MAX_CLOCK_SKEW_MS
                    );
                }
            }
        }
        stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    const T0: u64 = 1_700_000_000_000;

    fn seen(index: u64, clock_ms: u64, by: NodeId) -> ClockSeen {
        ClockSeen {
            index,
            clock_ms,
            stamped_by: by,
        }
    }

    #[test]
    fn without_an_anchor_the_wall_clock_is_taken() {
        let t = Timeline::new(1);
        t.set_replayed_through(None);
        let s = t.stamp(5_000, Instant::now());
        assert_eq!((s.timeline_ms, s.time_ms()), (None, 5_000));
    }

    #[test]
    fn a_wall_clock_a_day_ahead_moves_time_by_the_elapsed_time_only() {
        let t = Timeline::new(2);
        t.set_replayed_through(Some(10));
        let t0 = Instant::now();
        // Another node's stamp moved the clock to 1,000,000 at t0.
        t.observe(seen(11, T0, 0), t0);
        let s = t.stamp(T0 + DAY_MS, t0 + Duration::from_secs(4));
        assert_eq!(s.timeline_ms, Some(T0 + 4_000));
        assert_eq!(s.time_ms(), T0 + 4_000 + MAX_CLOCK_SKEW_MS);
        // A wall clock a day behind is held the same way.
        let s = t.stamp(T0 - DAY_MS, t0 + Duration::from_secs(4));
        assert_eq!(s.time_ms(), T0 + 4_000 - MAX_CLOCK_SKEW_MS);
        // A wall clock within the allowance is taken as it is.
        let s = t.stamp(T0 + 4_300, t0 + Duration::from_secs(4));
        assert_eq!(s.time_ms(), T0 + 4_300);
    }

    #[test]
    fn own_stamps_and_replayed_entries_do_not_move_the_anchor() {
        let t = Timeline::new(2);
        t.set_replayed_through(Some(10));
        let t0 = Instant::now();
        // Replayed: ignored.
        t.observe(seen(9, 500, 0), t0);
        assert_eq!(t.predict(t0), None);
        t.observe(seen(11, T0, 0), t0);
        // This node's own (bounded) stamps applied later do not re-anchor,
        // so the allowance never adds up.
        for i in 1..=100u64 {
            let at = t0 + Duration::from_millis(10 * i);
            let s = t.stamp(T0 + DAY_MS, at);
            t.observe(seen(11 + i, s.time_ms(), 2), at + Duration::from_millis(1));
        }
        let at = t0 + Duration::from_secs(2);
        assert_eq!(t.predict(at), Some(T0 + 2_000));
    }

    /// A new leader applies its predecessor's last entries only once it has
    /// committed its own first entry, seconds after they were stamped; a
    /// follower back from a pause applies a backlog. Those old stamps say
    /// the cluster time was at least that much, not that it is that much
    /// now: they must not pull the prediction back (which made a new
    /// leader stamp seconds in the past for its whole term, so values
    /// outlived their TTL, or vanished early after the next change).
    #[test]
    fn an_old_stamp_applied_late_does_not_pull_the_prediction_back() {
        let t = Timeline::new(1);
        t.set_replayed_through(Some(10));
        let t0 = Instant::now();
        t.observe(seen(11, T0, 0), t0);
        // An entry node 0 stamped at T0 + 500 ms, applied 3.5 s later.
        let late = t0 + Duration::from_millis(4_000);
        t.observe(seen(12, T0 + 500, 0), late);
        assert_eq!(t.predict(late), Some(T0 + 4_000));
        let s = t.stamp(T0 + 4_000, late);
        assert_eq!(s.time_ms(), T0 + 4_000);
        // A stamp ahead of the prediction still moves it forward.
        t.observe(seen(13, T0 + 4_600, 0), late);
        assert_eq!(t.predict(late), Some(T0 + 4_600));
    }

    #[test]
    fn the_first_own_stamp_anchors_a_node_that_saw_no_other() {
        let t = Timeline::new(0);
        t.set_replayed_through(None);
        let t0 = Instant::now();
        t.observe(seen(1, 7_000, 0), t0);
        assert_eq!(t.predict(t0 + Duration::from_secs(1)), Some(8_000));
    }
}
