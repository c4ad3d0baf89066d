//! The replica's staleness bound (docs/ARCHITECTURE.md §3.3), measured on its own monotonic clock.
//!
//! Every probe interval the replica notes the instant P, obtains a fresh read index (from the
//! leader over the `Raft` service, or from its own quorum round when it is the leader), and waits
//! until it has applied that index. The read index covers every write acknowledged before the
//! leader answered, and the leader answered after P, so from then on the replica has seen every
//! write acknowledged before P: its staleness is at most `now - P`.
//!
//! Why not the arrival of heartbeats: writes acknowledged while a heartbeat was in flight are not
//! in it, and a deposed leader on the replica's side of a partition still sends heartbeats. Only a
//! read index confirmed by the current quorum proves freshness.
//!
//! Invariants: the recorded P only moves forward; a replica that has never completed a probe (or
//! has none since it started) has no bound at all, which refuses every bounded read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;

/// The instant of the newest completed probe, readable without a lock.
pub struct StalenessTracker {
    base: Instant,
    /// Nanoseconds from `base` to the newest completed probe's send instant, plus one; 0 = none.
    fresh_as_of: AtomicU64,
}

impl Default for StalenessTracker {
    fn default() -> Self {
        StalenessTracker { base: Instant::now(), fresh_as_of: AtomicU64::new(0) }
    }
}

impl StalenessTracker {
    /// The current upper bound on how stale this replica is; `None` if it has none.
    pub fn bound(&self) -> Option<Duration> {
        let stamp = self.fresh_as_of.load(Ordering::Acquire);
        let since_base = Duration::from_nanos(stamp.checked_sub(1)?);
        Some((self.base + since_base).elapsed())
    }

    /// The bound in whole milliseconds, rounded up so it is never understated.
    pub fn bound_ms(&self) -> Option<u64> {
        self.bound().map(|d| d.as_nanos().div_ceil(1_000_000) as u64)
    }

    /// Records that everything acknowledged before `probe_sent` is applied here.
    pub fn record(&self, probe_sent: Instant) {
        let stamp = probe_sent.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.fresh_as_of.fetch_max(stamp, Ordering::AcqRel);
    }
}

/// Most probes in flight at once. Probes overlap so that a round trip longer than the probe
/// interval does not add to the bound: a new probe starts every interval, not every round trip.
const MAX_PROBES_IN_FLIGHT: usize = 16;

/// Starts a probe every `node.config().probe_interval`, forever, keeping the node's bound fresh.
pub async fn run_probe(node: Node) {
    let interval = node.config().probe_interval;
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PROBES_IN_FLIGHT));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !node.is_member_of_a_cluster() {
            continue;
        }
        // All slots busy means the leader is slow or gone: skipping a tick loses nothing.
        let Ok(slot) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            probe_once(&node).await;
        });
    }
}

/// One probe: note the instant, get a fresh read index, wait to apply it, record the instant.
async fn probe_once(node: &Node) {
    // A probe that takes longer than this is of no use for a bound anyway.
    let patience = node.config().request_timeout.min(Duration::from_secs(2));
    let sent = Instant::now();
    let result = async {
        let confirmed = super::fresh_read_index(node, patience).await?;
        let remaining = (sent + patience).saturating_duration_since(Instant::now());
        node.wait_applied(confirmed.index, remaining).await
    }
    .await;
    match result {
        Ok(()) => node.staleness().record(sent),
        Err(e) => tracing::debug!(error = %e, "staleness probe failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bound_grows_from_the_newest_probe_sent() {
        let tracker = StalenessTracker::default();
        assert_eq!(tracker.bound(), None, "no probe yet: no bound");

        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(30)).await;
        tracker.record(sent);
        assert_eq!(tracker.bound(), Some(Duration::from_millis(30)));

        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(tracker.bound_ms(), Some(130));

        // An older probe finishing late never makes the bound look better than it is... nor worse.
        tracker.record(sent - Duration::from_millis(1));
        assert_eq!(tracker.bound_ms(), Some(130));
        let newer = Instant::now();
        tracker.record(newer);
        assert_eq!(tracker.bound_ms(), Some(0));
    }
}
