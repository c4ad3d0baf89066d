//! The one place a node reads wall-clock time (docs/ARCHITECTURE.md §4.1).
//!
//! Wall time only stamps proposed commands (`Command::now_ms`) and hides entries that look expired
//! by this node's clock when it serves a read. Timeouts and staleness bounds use `Instant` instead.
//! The offset lets the fault harness skew one node's clock without touching the host's: it is set
//! at start and changed while it runs (admin `SetClockOffset`) only in the harness's node build
//! ([`crate::faults`]), so the harness can make the clock jump and strobe. Copies of
//! a `Clock` share one offset.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock with an adjustable offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// A clock shifted by `offset_ms` from the host's wall clock.
    pub fn with_offset_ms(offset_ms: i64) -> Clock {
        Clock { offset_ms: Arc::new(AtomicI64::new(offset_ms)) }
    }

    /// Milliseconds since the unix epoch, plus the offset (never below 0).
    pub fn now_ms(&self) -> u64 {
        let host = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        host.saturating_add(self.offset_ms()).max(0) as u64
    }

    /// The current offset from the host's clock, in ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Replaces the offset (every copy of this clock sees it); returns the previous one.
    pub fn set_offset_ms(&self, offset_ms: i64) -> i64 {
        self.offset_ms.swap(offset_ms, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_one_adjustable_offset() {
        let clock = Clock::with_offset_ms(0);
        let copy = clock.clone();
        let before = copy.now_ms();
        assert_eq!(clock.set_offset_ms(3_600_000), 0);
        let after = copy.now_ms();
        assert!(after >= before + 3_600_000, "{before} -> {after}");
        assert_eq!(copy.offset_ms(), 3_600_000);
        clock.set_offset_ms(-i64::MAX);
        assert_eq!(copy.now_ms(), 0, "never below the epoch");
    }
}
