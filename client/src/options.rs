//! What a caller can ask of a read or a write, and its translation to wire fields.
//!
//! Validation that needs no server happens here, before anything is sent: a TTL must be at least
//! 1 ms and fit in a `u64` of milliseconds; a staleness bound likewise; a key must not be empty.
//! Limits the server configures (key and value sizes) are left to the server.

use std::time::Duration;

use geocache_proto as pb;

use crate::error::{Error, Result};

/// How fresh a read must be (docs/ARCHITECTURE.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Sees every write acknowledged before the read started. Answered by the leader after a
    /// quorum check (or a follower that asked it for a read index). The default.
    #[default]
    Linearizable,
    /// Sees every write acknowledged more than the given duration before the read started.
    /// Answered locally by a replica whose staleness bound is within it; otherwise the client
    /// falls back to another replica or the leader. Must be at least 1 ms.
    Bounded(Duration),
    /// Whatever the first replica that answers has applied; may be arbitrarily old.
    Stale,
}

/// Options of a read (`get_with`, `ttl_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// How fresh the answer must be. Default: [`Consistency::Linearizable`].
    pub consistency: Consistency,
    /// Read-your-writes: the replica waits (within the call's deadline) until it has applied at
    /// least this log index, e.g. the `version` of your last [`WriteResult`](crate::WriteResult).
    pub min_version: Option<u64>,
}

impl ReadOptions {
    /// A linearizable read (the default).
    pub fn linearizable() -> Self {
        Self::default()
    }

    /// A read at most `max_staleness` stale, answered by a nearby replica when it can.
    pub fn bounded(max_staleness: Duration) -> Self {
        ReadOptions { consistency: Consistency::Bounded(max_staleness), ..Self::default() }
    }

    /// A read from the first replica that answers, however stale.
    pub fn stale() -> Self {
        ReadOptions { consistency: Consistency::Stale, ..Self::default() }
    }

    /// Also wait until the replica has applied `version` (read-your-writes).
    pub fn with_min_version(mut self, version: u64) -> Self {
        self.min_version = Some(version);
        self
    }

    /// The wire fields `(consistency, max_staleness_ms, min_version)`.
    pub(crate) fn to_wire(self) -> Result<(pb::Consistency, u64, u64)> {
        let min_version = self.min_version.unwrap_or(0);
        Ok(match self.consistency {
            Consistency::Linearizable => (pb::Consistency::Linearizable, 0, min_version),
            Consistency::Bounded(d) => (pb::Consistency::Bounded, whole_millis(d, "staleness bound")?, min_version),
            Consistency::Stale => (pb::Consistency::Stale, 0, min_version),
        })
    }
}

/// When a `set` takes effect. A write whose condition does not hold returns
/// `Ok(WriteResult { applied: false, .. })`, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Always write. The default.
    #[default]
    Always,
    /// Only if the key is absent (or expired).
    IfAbsent,
    /// Only if the key is present.
    IfPresent,
    /// Only if the key currently has this version (compare-and-set).
    IfVersion(u64),
}

impl Condition {
    /// The wire fields `(condition, if_version)`.
    pub(crate) fn to_wire(self) -> (pb::ConditionKind, u64) {
        match self {
            Condition::Always => (pb::ConditionKind::ConditionAlways, 0),
            Condition::IfAbsent => (pb::ConditionKind::ConditionIfAbsent, 0),
            Condition::IfPresent => (pb::ConditionKind::ConditionIfPresent, 0),
            Condition::IfVersion(v) => (pb::ConditionKind::ConditionIfVersion, v),
        }
    }
}

/// Options of a `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// Time to live, at least 1 ms, counted from when the leader proposes the write. `None`:
    /// the entry lives until it is evicted or deleted.
    pub ttl: Option<Duration>,
    /// When the write takes effect. Default: [`Condition::Always`].
    pub condition: Condition,
}

impl SetOptions {
    /// Unconditional, no expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the condition.
    pub fn with_condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }
}

/// A time to live in whole milliseconds, rounded down. Zero, under 1 ms, or more than
/// `u64::MAX` ms is an [`Error::InvalidArgument`].
pub(crate) fn ttl_ms(ttl: Duration) -> Result<u64> {
    whole_millis(ttl, "ttl")
}

fn whole_millis(d: Duration, what: &str) -> Result<u64> {
    let ms = u64::try_from(d.as_millis())
        .map_err(|_| Error::InvalidArgument(format!("{what} {d:?} overflows u64 milliseconds")))?;
    if ms == 0 {
        return Err(Error::InvalidArgument(format!(
            "{what} {d:?} is under the 1 ms resolution; it must be at least 1 ms"
        )));
    }
    Ok(ms)
}

/// Keys are non-empty UTF-8 strings; size limits are the server's.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_must_be_at_least_one_millisecond() {
        assert!(matches!(ttl_ms(Duration::ZERO), Err(Error::InvalidArgument(_))));
        assert!(matches!(ttl_ms(Duration::from_micros(999)), Err(Error::InvalidArgument(_))));
        assert_eq!(ttl_ms(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1999)).unwrap(), 1);
        assert_eq!(ttl_ms(Duration::from_secs(60)).unwrap(), 60_000);
        assert_eq!(ttl_ms(Duration::from_millis(u64::MAX)).unwrap(), u64::MAX);
        assert!(matches!(ttl_ms(Duration::MAX), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn read_options_to_wire() {
        assert_eq!(ReadOptions::default().to_wire().unwrap(), (pb::Consistency::Linearizable, 0, 0));
        assert_eq!(
            ReadOptions::bounded(Duration::from_millis(250)).with_min_version(42).to_wire().unwrap(),
            (pb::Consistency::Bounded, 250, 42)
        );
        assert_eq!(ReadOptions::stale().to_wire().unwrap(), (pb::Consistency::Stale, 0, 0));
        assert!(matches!(ReadOptions::bounded(Duration::ZERO).to_wire(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn conditions_to_wire() {
        assert_eq!(Condition::default().to_wire(), (pb::ConditionKind::ConditionAlways, 0));
        assert_eq!(Condition::IfVersion(17).to_wire(), (pb::ConditionKind::ConditionIfVersion, 17));
    }

    #[test]
    fn empty_keys_are_refused() {
        assert!(check_key("").is_err());
        assert!(check_key("k").is_ok());
    }
}
