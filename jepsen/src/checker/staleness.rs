//! Bounded staleness: a `bounded(d)` read sees every write acknowledged more than `d` before it
//! began (docs/ARCHITECTURE.md §3.3).
//!
//! **The rule.** For an `Ok` read `r` at level `bounded(d)` invoked at `t`, let `W` be the writes,
//! compare-and-sets, sets and deletes of its key acknowledged (`Ok` completion) strictly before
//! `t - d`. The read is a violation if:
//! * **stale**: it returned `v`, written by `w_v`, and some `w` in `W` was invoked after `w_v`
//!   completed. Then `w` takes effect after `w_v` in every linearization, and writes unique
//!   values (or deletes), so by `t - d` the register had moved past `v` for good. A value read
//!   after its TTL is fine: expiry may be late;
//! * **absent**: it returned absent although a write in `W` took effect before it and nothing
//!   explains the absence: no delete can have come between, and no set that may have been the
//!   key's last before the read can have expired by its completion ([`super::ttl`]). When that
//!   write had a TTL this is reported as an **early expiry** instead (the entry vanished before
//!   its time; or the read missed the write entirely, which the history cannot tell apart);
//! * **from the future**: the write of `v` was invoked only after the read completed;
//! * **never written** / **failed write**: `v` was written by no operation, or only by a `Fail`ed
//!   one (which certainly did not happen).
//!
//! `stale` reads get the last three rules only (their bound is infinite, so `W` is empty): even a
//! stale read must return something that was written.
//!
//! **Why it is sound.** A black-box checker does not know the log order. "Newest write in `W`" is
//! not "the one acknowledged last": two writes acknowledged before `t - d` may have overlapped, and
//! then either may be the newer. The rule above only uses order that real time proves (`w`
//! began after `w_v` ended), so every violation it reports is real. It may miss some (two
//! overlapping writes whose order only the log knows); the linearizability checker covers those for
//! linearizable reads. Like that checker it trusts no version or bound the system reports, only
//! values and the one test clock. Equal timestamps count in the system's favour. An indeterminate
//! write (`Info`) has no known completion, so no write is provably after it.
//!
//! The checker is exact with respect to this rule, so its verdict is never `unknown`.
//!
//! **Not checked here.** Linearizable reads (the linearizability checker's), read-your-writes with
//! `min_version` ([`super::read_your_writes`]'s, at every level), and the bounds replicas report
//! about themselves.

use serde::{Deserialize, Serialize};

use super::operation::Operation;
use super::ttl::{self, EarlyExpiry};
use super::Verdict;
use crate::history::{EventKind, Op, ReadLevel};

/// Which rule a read broke.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StaleRule {
    Stale,
    Absent,
    FromTheFuture,
    NeverWritten,
    FailedWrite,
}

/// One read that broke its promise.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StaleRead {
    pub key: String,
    pub rule: StaleRule,
    pub read: Operation,
    /// The read's bound, `None` for a `stale` read.
    pub bound_ms: Option<u64>,
    /// The acknowledged write the read should have seen (`stale`, `absent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<Operation>,
    /// The operation that wrote the value read, if any (`stale`, `from-the-future`,
    /// `failed-write`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_writer: Option<Operation>,
    /// For `stale` and `absent`: how long before the read began the missed write was
    /// acknowledged, in ms (more than `bound_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_by_ms: Option<f64>,
    pub explanation: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StalenessReport {
    pub valid: Verdict,
    /// `Ok` bounded and stale reads judged.
    pub reads_checked: usize,
    pub violations: Vec<StaleRead>,
    /// Absent reads after a write with a TTL that cannot have expired yet.
    pub early_expiries: Vec<EarlyExpiry>,
}

/// Checks every `Ok` bounded and stale read of `ops` (from [`super::operation::pair`]);
/// `slack_ms` is the TTL slack.
pub fn check(ops: &[Operation], slack_ms: u64) -> StalenessReport {
    let by_key = super::operation::by_key(ops);
    let mut reads_checked = 0;
    let mut violations = Vec::new();
    let mut early_expiries = Vec::new();
    for (key, ops) in by_key {
        for read in &ops {
            let (level, value) = match &read.op {
                Op::Read { level, value, .. } if read.outcome == EventKind::Ok => (*level, value.as_deref()),
                _ => continue,
            };
            let bound_ms = match level {
                ReadLevel::Bounded(d) => Some(d),
                ReadLevel::Stale => None,
                ReadLevel::Linearizable => continue,
            };
            reads_checked += 1;
            match check_read(key, read, bound_ms, value, &ops, slack_ms) {
                Some(Finding::Stale(v)) => violations.push(v),
                Some(Finding::EarlyExpiry(e)) => early_expiries.push(e),
                None => {}
            }
        }
    }
    let valid = if violations.is_empty() && early_expiries.is_empty() { Verdict::Valid } else { Verdict::Invalid };
    StalenessReport { valid, reads_checked, violations, early_expiries }
}

enum Finding {
    Stale(StaleRead),
    EarlyExpiry(EarlyExpiry),
}

fn check_read(
    key: &str,
    read: &Operation,
    bound_ms: Option<u64>,
    value: Option<&str>,
    ops: &[&Operation],
    slack_ms: u64,
) -> Option<Finding> {
    // W: acknowledged strictly before t - d. A bound reaching before the test started (or a stale
    // read's infinite bound) leaves W empty.
    let cutoff = bound_ms.and_then(|d| read.invoke_ns.checked_sub(d.saturating_mul(1_000_000)));
    let mut w: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| o.is_acknowledged_mutation() && cutoff.is_some_and(|c| o.complete_ns.is_some_and(|done| done < c)))
        .collect();
    // Earliest acknowledged first: the missed write we report is the most convincing one.
    w.sort_by_key(|o| o.complete_ns);
    // Only the `stale` and `absent` rules mention the bound, and they need W, hence a bound.
    let window = format!("more than {}ms before the read began", bound_ms.unwrap_or_default());
    let violation = |rule, missed: Option<&Operation>, value_writer: Option<&Operation>, explanation| StaleRead {
        key: key.to_string(),
        rule,
        read: read.clone(),
        bound_ms,
        missed: missed.cloned(),
        value_writer: value_writer.cloned(),
        missed_by_ms: missed.and_then(|m| m.complete_ns).map(|c| (read.invoke_ns - c) as f64 / 1e6),
        explanation,
    };

    let Some(v) = value else {
        let anchors = w.iter().copied().filter(|o| o.written_value().is_some());
        let (missed, others) = ttl::unexplained_absence(read, anchors, ops, slack_ms)?;
        if missed.ttl_ms().is_some() {
            return Some(Finding::EarlyExpiry(EarlyExpiry::new("staleness", missed, read, &others, slack_ms)));
        }
        let explanation =
            format!("{read}: absent, but {missed} was acknowledged {window}, and no delete can have come between");
        return Some(Finding::Stale(violation(StaleRule::Absent, Some(missed), None, explanation)));
    };

    let writers: Vec<&Operation> = ops.iter().copied().filter(|o| o.written_value() == Some(v)).collect();
    let live: Vec<&Operation> = writers.iter().copied().filter(|o| o.outcome != EventKind::Fail).collect();
    if live.is_empty() {
        return Some(Finding::Stale(match writers.first() {
            Some(failed) => violation(
                StaleRule::FailedWrite,
                None,
                Some(failed),
                format!("{read}: {v:?} was written only by a failed operation, {failed}"),
            ),
            None => violation(StaleRule::NeverWritten, None, None, format!("{read}: no operation wrote {v:?}")),
        }));
    }
    if live.iter().all(|w| read.precedes(w)) {
        let writer = live[0];
        let explanation = format!("{read}: {v:?} was written only by {writer}, which began after the read completed");
        return Some(Finding::Stale(violation(StaleRule::FromTheFuture, None, Some(writer), explanation)));
    }
    // Stale if, whichever write of v the read saw (normally exactly one), a write or delete in W
    // provably came after it.
    let mut first = None;
    for writer in &live {
        let newer = w.iter().find(|n| writer.precedes(n))?;
        first.get_or_insert((*writer, *newer));
    }
    let (writer, missed) = first.expect("live is not empty");
    let explanation = format!(
        "{read}: {v:?} was stale: {missed} began after {v:?} was written by {writer}, and was \
         acknowledged {window}"
    );
    Some(Finding::Stale(violation(StaleRule::Stale, Some(missed), Some(writer), explanation)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::operation::pair;
    use crate::checker::test_history::H;
    use crate::history::Event;

    fn check_history(events: &[Event]) -> StalenessReport {
        let (ops, errors) = pair(events);
        assert!(errors.is_empty(), "{errors:?}");
        check(&ops, crate::checker::ttl::TIMESTAMP_TOLERANCE_MS)
    }

    fn bounded(d: u64, v: Option<&str>) -> Op {
        H::read_at("k", ReadLevel::Bounded(d), v)
    }

    #[test]
    fn staleness_bound_exceeded_is_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.w(1, 20, 30, "k", "v2"); // acknowledged at 30
                                   // Invoked at 200 with a 100ms bound: W = writes acked before 100, both; v2 came after v1.
        h.call(2, 200, 210, EventKind::Ok, bounded(100, Some("v1")));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.reads_checked, 1);
        let v = &report.violations[0];
        assert_eq!(v.rule, StaleRule::Stale);
        assert_eq!(v.missed.as_ref().unwrap().op, H::write("k", "v2"));
        assert_eq!(v.value_writer.as_ref().unwrap().op, H::write("k", "v1"));
        assert_eq!(v.missed_by_ms, Some(170.0));
        assert!(v.explanation.contains("more than 100ms before"), "{}", v.explanation);
    }

    #[test]
    fn older_value_within_the_bound_is_valid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.w(1, 20, 150, "k", "v2"); // acknowledged 50ms before the read, inside its 100ms window
        h.call(2, 200, 210, EventKind::Ok, bounded(100, Some("v1")));
        h.call(3, 200, 210, EventKind::Ok, bounded(100, Some("v2")));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.reads_checked, 2);
    }

    #[test]
    fn overlapping_writes_acknowledged_before_the_window_may_be_seen_in_either_order() {
        let mut h = H::new();
        h.w(1, 0, 30, "k", "v1");
        h.w(2, 10, 20, "k", "v2"); // overlaps v1: either may be the newer
        h.call(3, 200, 210, EventKind::Ok, bounded(100, Some("v1")));
        h.call(4, 200, 210, EventKind::Ok, bounded(100, Some("v2")));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
    }

    #[test]
    fn absent_after_an_acknowledged_write_is_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.call(2, 200, 210, EventKind::Ok, bounded(100, None));
        h.call(3, 50, 60, EventKind::Ok, bounded(100, None)); // window reaches back before the write
        let report = check_history(&h.history());
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        assert_eq!(report.violations[0].rule, StaleRule::Absent);
        assert_eq!(report.violations[0].read.invoke_ns, 200_000_000);
    }

    #[test]
    fn impossible_values_are_invalid_even_for_stale_reads() {
        let mut h = H::new();
        h.call(1, 0, 10, EventKind::Fail, H::write("k", "failed"));
        h.call(2, 20, 30, EventKind::Ok, H::read_at("k", ReadLevel::Stale, Some("failed")));
        h.call(2, 40, 50, EventKind::Ok, H::read_at("k", ReadLevel::Stale, Some("nobody")));
        h.call(2, 60, 70, EventKind::Ok, H::read_at("k", ReadLevel::Stale, Some("future")));
        h.w(1, 80, 90, "k", "future");
        h.call(2, 100, 110, EventKind::Ok, H::read_at("k", ReadLevel::Stale, None)); // stale may lag
        let report = check_history(&h.history());
        let rules: Vec<StaleRule> = report.violations.iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![StaleRule::FailedWrite, StaleRule::NeverWritten, StaleRule::FromTheFuture]);
        assert_eq!(report.reads_checked, 4);
    }

    #[test]
    fn indeterminate_writes_are_never_provably_overwritten() {
        let mut h = H::new();
        h.call(1, 0, 10, EventKind::Info, H::write("k", "v1"));
        h.w(2, 20, 30, "k", "v2"); // may have come before v1 took effect
        h.call(3, 500, 510, EventKind::Ok, bounded(100, Some("v1")));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
    }

    #[test]
    fn deletes_overwrite_and_explain_absence() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "v1", None);
        h.d(1, 20, 30, "k");
        h.call(2, 500, 510, EventKind::Ok, bounded(100, None)); // deleted: fine
        h.call(2, 520, 530, EventKind::Ok, bounded(100, Some("v1"))); // deleted long before: stale
        let report = check_history(&h.history());
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        assert_eq!(report.violations[0].rule, StaleRule::Stale);
        assert_eq!(report.violations[0].missed.as_ref().unwrap().op, H::delete("k"));
        assert!(report.early_expiries.is_empty());
    }

    #[test]
    fn cas_counts_as_a_write() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.call(1, 20, 30, EventKind::Ok, H::cas("k", Some("v1"), "v2"));
        h.call(2, 500, 510, EventKind::Ok, bounded(100, Some("v1")));
        let report = check_history(&h.history());
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        assert_eq!(report.violations[0].rule, StaleRule::Stale);
    }
}
