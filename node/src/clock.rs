//! The one place a node reads wall-clock time (DESIGN.md section 6).
//!
//! Wall time only stamps proposed commands (`Command::now_ms`) and hides entries that look expired
//! by this node's clock when it serves a read. Timeouts and staleness bounds use `Instant` instead.
//! The offset lets the fault harness skew one node's clock without touching the host's.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock with a fixed offset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// A clock shifted by `offset_ms` from the host's wall clock.
    pub fn with_offset_ms(offset_ms: i64) -> Clock {
        Clock { offset_ms }
    }

    /// Milliseconds since the unix epoch, plus the offset (never below 0).
    pub fn now_ms(&self) -> u64 {
        let host = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        host.saturating_add(self.offset_ms).max(0) as u64
    }
}
