//! Expiry: when the history allows a cache entry to disappear, the rules the linearizability,
//! staleness and durability checkers share for the cache workload's sets with a TTL and its
//! deletes, and the early-expiry anomaly.
//!
//! **What a correct geocache does** (docs/ARCHITECTURE.md §4.1). A set with TTL `T` becomes an absolute
//! `expires_at_ms = now_ms + T` on the node that proposes it, `now_ms` being that node's wall
//! clock or the log clock if that is later (`Node::proposal_time_ms`), so never earlier than its
//! wall clock. The entry is gone once the state machine's clock (the largest `now_ms` applied)
//! reaches it, and a read hides it once the answering node's own clock does (logical expiry). Purging is driven by
//! the leader's ticks and a node whose clock lags may still show the entry, so an entry may
//! disappear *late*, and a lagging node may even show it again after another hid it. It must
//! never disappear *early*.
//!
//! **What the checker can know.** Only the history. The set was invoked at `t_inv` on the
//! harness's clock, so the node that stamped it did so no earlier, and its expiry is at least
//! `t_inv + T` on that node's clock. A node judges the entry expired (by its own clock, or by a
//! log clock stamped by some node) only when that clock reaches the expiry. If the node clocks'
//! offsets from the host clock spread over at most `s` ms (a stamping node behind by `a`, a
//! judging node ahead by `b`, `a + b <= s`), that happens no earlier than `t_inv + T - s` on the
//! host clock. So the **earliest expiry** of the set is `t_inv + T - slack`
//! ([`earliest_expiry_ns`]), where `slack_ms` ([`slack_ms`]) is
//! * the spread of clock offsets the test may have applied (`clock_skew_ms`; 0 without the clock
//!   nemesis, which passes its figure), plus
//! * [`TIMESTAMP_TOLERANCE_MS`] for converting between the two clocks: see there.
//!
//! A read may have been served at any instant up to its completion, so a read may have seen the
//! entry expired iff it *completed* at or after the earliest expiry.
//!
//! **Absence** ([`absence_after`]). Let a read `r` return absent, and let `s` be an acknowledged
//! write of the key that took effect before `r` (it completed before `r` began, or, for a bounded
//! read, before `r`'s staleness window). The key's last write or delete before `r` is then `s`
//! or some mutation `c` that may have come after `s` and before `r`: not failed, not completed
//! before `s` began, not begun after `r` completed. The absence is explained only if one of those
//! is a delete, or a set that may have expired by `r`'s completion. If none is, `r` is invalid:
//! an **early expiry** when `s` had a TTL (the entry vanished before its time), otherwise a
//! plain lost or missed write. Checking the anchors `s` that no other anchor precedes is enough:
//! if an earlier anchor `s1` proves the absence impossible, a later one `s2` does too (every
//! mutation that may follow `s2` may follow `s1`, and `s2` is one of them).
//!
//! An indeterminate set with a TTL may have taken effect and expired, so it explains a later
//! absence once its own earliest expiry (from its invocation) has passed; an indeterminate
//! delete explains any absence after its invocation.

use serde::{Deserialize, Serialize};

use super::operation::{ms, Operation};
use crate::history::{EventKind, Op};

/// Tolerance, in ms, for comparing the nodes' timestamps with the harness's. The harness stamps
/// events with the monotonic clock (`Instant`, `CLOCK_MONOTONIC`) and records an invocation
/// before sending it and a completion after the answer; nodes stamp writes and judge expiry with
/// the wall clock (`SystemTime`, `CLOCK_REALTIME`) truncated to whole milliseconds. On Linux both
/// clocks follow the same timekeeper and NTP slews them alike, so they tick at the same rate and
/// differ only by a step of the wall clock (a clock fault no test injects). Truncation makes an
/// expiry stamp up to 1 ms early; the rest is margin for the ns/ms conversions.
pub const TIMESTAMP_TOLERANCE_MS: u64 = 3;

/// The TTL slack for a test whose nodes' clock offsets spread over at most `clock_skew_ms`.
pub fn slack_ms(clock_skew_ms: u64) -> u64 {
    clock_skew_ms.saturating_add(TIMESTAMP_TOLERANCE_MS)
}

/// The earliest harness time (ns) at which `op`'s entry may have expired: its invocation plus
/// its TTL, less `slack_ms`. `None` if it never expires (not a set, or a set without a TTL).
pub fn earliest_expiry_ns(op: &Operation, slack_ms: u64) -> Option<u64> {
    let ttl = op.ttl_ms()?;
    Some(op.invoke_ns.saturating_add(ttl.saturating_mul(1_000_000)).saturating_sub(slack_ms.saturating_mul(1_000_000)))
}

/// True if `op` is a set with a TTL that may have expired by the time `read` completed.
pub fn may_have_expired(op: &Operation, read: &Operation, slack_ms: u64) -> bool {
    earliest_expiry_ns(op, slack_ms).is_some_and(|e| e <= read.effective_complete_ns())
}

/// What explains that a read found a key absent after an acknowledged write of it.
#[derive(Debug, PartialEq)]
pub enum Absence<'a> {
    /// A delete may have come between.
    Deleted,
    /// No delete can have, but the key's last write before the read may have expired by then:
    /// the read saw an expiry.
    Expired,
    /// Nothing: no delete can have come between, and none of the writes that may have been the
    /// key's last before the read (the anchor and `others`) can have expired by then.
    Unexplained { others: Vec<&'a Operation> },
}

/// Why `read` may have found the key absent although `anchor`, an acknowledged write of it,
/// took effect before it (see the module doc). `ops` are the key's operations.
pub fn absence_after<'a>(anchor: &Operation, read: &Operation, ops: &[&'a Operation], slack_ms: u64) -> Absence<'a> {
    let between: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|c| {
            c.is_mutation()
                && c.outcome != EventKind::Fail
                && c.invoke_index != anchor.invoke_index
                && !c.precedes(anchor)
                && !read.precedes(c)
        })
        .collect();
    if between.iter().any(|c| matches!(c.op, Op::Delete { .. })) {
        return Absence::Deleted;
    }
    if may_have_expired(anchor, read, slack_ms) || between.iter().any(|c| may_have_expired(c, read, slack_ms)) {
        return Absence::Expired;
    }
    Absence::Unexplained { others: between }
}

/// The anchors worth checking (see the module doc): those no other anchor precedes, latest
/// acknowledged first.
fn latest_anchors<'a>(anchors: impl IntoIterator<Item = &'a Operation>) -> Vec<&'a Operation> {
    let anchors: Vec<&Operation> = anchors.into_iter().collect();
    let Some(last_invoked) = anchors.iter().map(|a| a.invoke_ns).max() else { return Vec::new() };
    let mut latest: Vec<&Operation> =
        anchors.into_iter().filter(|a| a.complete_ns.is_some_and(|c| c >= last_invoked)).collect();
    latest.sort_by_key(|a| std::cmp::Reverse(a.complete_ns));
    latest
}

/// The first of `anchors` (acknowledged writes that took effect before `read`, which returned
/// absent) after which nothing explains the absence, with the other writes that may have come
/// between. `None` if the absence is explained (or there is no anchor).
pub fn unexplained_absence<'a>(
    read: &Operation,
    anchors: impl IntoIterator<Item = &'a Operation>,
    ops: &[&'a Operation],
    slack_ms: u64,
) -> Option<(&'a Operation, Vec<&'a Operation>)> {
    latest_anchors(anchors).into_iter().find_map(|anchor| match absence_after(anchor, read, ops, slack_ms) {
        Absence::Unexplained { others } => Some((anchor, others)),
        Absence::Deleted | Absence::Expired => None,
    })
}

/// True if `read` returned absent and only an expiry explains it: some acknowledged write
/// preceded it, no delete can have come between, and a set with a TTL that may have expired by
/// then may have been the key's last write. (For the TTL summary: proof the workload exercised
/// expiry.)
pub fn saw_expiry(read: &Operation, ops: &[&Operation], slack_ms: u64) -> bool {
    if read.outcome != EventKind::Ok || !matches!(read.op, Op::Read { value: None, .. }) {
        return false;
    }
    let anchors = ops.iter().copied().filter(|o| o.is_acknowledged_write() && o.precedes(read));
    let latest = latest_anchors(anchors);
    !latest.is_empty() && latest.iter().all(|a| absence_after(a, read, ops, slack_ms) == Absence::Expired)
}

/// An entry that disappeared before its TTL can have passed: a read found the key absent,
/// although an acknowledged set with a TTL took effect before the read, no delete can have
/// come between, and neither it nor any other set that may have followed it can have expired
/// by the read's completion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EarlyExpiry {
    pub key: String,
    /// The checker that found it: `linearizable`, `staleness` or `durability`.
    pub found_by: String,
    /// The acknowledged set whose entry vanished too early.
    pub set: Operation,
    pub ttl_ms: u64,
    /// The read that found the key absent.
    pub read: Operation,
    /// Other sets that may have been the key's last write before the read; none of them can
    /// have expired by then either (usually empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<Operation>,
    /// When the set was invoked, ms on the history's clock.
    pub set_invoked_ms: f64,
    /// `set_invoked_ms + ttl_ms`: the soonest the entry may expire with perfectly agreeing clocks.
    pub expires_no_earlier_than_ms: f64,
    /// When the read completed.
    pub read_completed_ms: f64,
    /// `expires_no_earlier_than_ms - read_completed_ms`: more than `slack_ms`.
    pub early_by_ms: f64,
    /// The slack the check allowed (clock skew spread plus [`TIMESTAMP_TOLERANCE_MS`]).
    pub slack_ms: u64,
    pub explanation: String,
}

impl EarlyExpiry {
    /// The anomaly for `read`, which found the key absent after `set` (with a TTL), with
    /// `others` the sets that may have come between.
    pub fn new(found_by: &str, set: &Operation, read: &Operation, others: &[&Operation], slack_ms: u64) -> EarlyExpiry {
        let ttl_ms = set.ttl_ms().unwrap_or_default();
        let expires_ns = set.invoke_ns.saturating_add(ttl_ms.saturating_mul(1_000_000));
        let read_done = read.complete_ns.unwrap_or(u64::MAX);
        let early_by_ms = (expires_ns as f64 - read_done as f64) / 1e6;
        let others_text = if others.is_empty() {
            String::new()
        } else {
            let list = others.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("; ");
            format!(" Other sets that may have come between cannot have expired by then either: {list}.")
        };
        let explanation = format!(
            "early expiry: {read} found {key} absent {early_by_ms:.3}ms before {set} could expire \
             (invoked at {inv}, TTL {ttl_ms}ms, slack {slack_ms}ms); it was acknowledged before the read began and \
             no delete can have come between.{others_text}",
            key = set.op.key(),
            inv = ms(set.invoke_ns),
        );
        EarlyExpiry {
            key: set.op.key().to_string(),
            found_by: found_by.to_string(),
            set: set.clone(),
            ttl_ms,
            read: read.clone(),
            others: others.iter().map(|o| (*o).clone()).collect(),
            set_invoked_ms: set.invoke_ns as f64 / 1e6,
            expires_no_earlier_than_ms: expires_ns as f64 / 1e6,
            read_completed_ms: read_done as f64 / 1e6,
            early_by_ms,
            slack_ms,
            explanation,
        }
    }
}

/// What the TTL rules saw in a history, for `results.json`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TtlSummary {
    /// The slack allowed: the clock skew spread plus [`TIMESTAMP_TOLERANCE_MS`].
    pub slack_ms: u64,
    /// Acknowledged sets with a TTL.
    pub sets_with_ttl: usize,
    /// `Ok` reads that found a key absent where only an expiry explains it ([`saw_expiry`]):
    /// the expiry path was exercised.
    pub expired_reads: usize,
    /// Early expiries found by any checker.
    pub early_expiries: usize,
}

/// Counts what [`TtlSummary`] reports (all but `early_expiries`) over `ops`.
pub fn summarize(ops: &[Operation], slack_ms: u64) -> TtlSummary {
    let by_key = super::operation::by_key(ops);
    let mut summary = TtlSummary { slack_ms, ..TtlSummary::default() };
    for ops in by_key.values() {
        summary.sets_with_ttl += ops.iter().filter(|o| o.is_acknowledged_write() && o.ttl_ms().is_some()).count();
        summary.expired_reads += ops.iter().filter(|r| saw_expiry(r, ops, slack_ms)).count();
    }
    summary
}

#[cfg(test)]
mod tests {
    //! The TTL rules through every checker, on small hand-written histories (times in ms).

    use std::time::Duration;

    use super::*;
    use crate::checker::durability::FINAL_PROCESS_BASE;
    use crate::checker::operation::pair;
    use crate::checker::test_history::H;
    use crate::checker::{check_all, Anomaly, CheckConfig, CheckReport, Verdict};
    use crate::history::ReadLevel;

    const F: u64 = FINAL_PROCESS_BASE;

    fn check(h: &H, clock_skew_ms: u64) -> CheckReport {
        let config = CheckConfig { clock_skew_ms, ..CheckConfig::new(Duration::from_secs(10)) };
        let report = check_all(&h.history(), &config);
        assert!(report.history_errors.is_empty(), "{:?}", report.history_errors);
        report
    }

    fn early_expiries(report: &CheckReport) -> Vec<&EarlyExpiry> {
        report
            .anomalies
            .iter()
            .filter_map(|a| match a {
                Anomaly::EarlyExpiry(e) => Some(&**e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn absent_after_the_ttl_is_valid_and_counted() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(200));
        h.r(2, 50, 60, "k", Some("a"));
        h.r(2, 210, 220, "k", None); // 220 >= 0 + 200 - 3
        let report = check(&h, 0);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.ttl.expired_reads, 1);
        assert_eq!(report.ttl.sets_with_ttl, 1);
        assert_eq!(report.ttl.slack_ms, TIMESTAMP_TOLERANCE_MS);
    }

    #[test]
    fn absent_well_before_the_ttl_is_an_early_expiry() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(1000));
        h.r(2, 100, 110, "k", None);
        let report = check(&h, 0);
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.linearizable.valid, Verdict::Invalid);
        let found = early_expiries(&report);
        assert_eq!(found.len(), 1, "{:#?}", report.anomalies);
        assert_eq!(report.anomalies.len(), 1, "an early expiry, not also a plain linearizability anomaly");
        let e = found[0];
        assert_eq!((e.key.as_str(), e.found_by.as_str(), e.ttl_ms), ("k", "linearizable", 1000));
        assert_eq!(e.set.op, H::set("k", "a", Some(1000)));
        assert_eq!(e.read.op, H::read_ok("k", None));
        assert_eq!((e.set_invoked_ms, e.expires_no_earlier_than_ms, e.read_completed_ms), (0.0, 1000.0, 110.0));
        assert_eq!(e.early_by_ms, 890.0);
        assert!(e.explanation.contains("early expiry"), "{}", e.explanation);
        assert_eq!(report.ttl.early_expiries, 1);
        // In results.json it is its own kind of anomaly.
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["anomalies"][0]["checker"], "early-expiry");
        assert_eq!(json["anomalies"][0]["early_by_ms"], 890.0);
        let back: CheckReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn a_stale_read_judged_as_linearizable_that_misses_a_set_is_a_stale_read() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(1000));
        h.call(2, 100, 110, EventKind::Ok, H::read_at("k", ReadLevel::Stale, None));
        let config = CheckConfig { reads_as_linearizable: true, ..CheckConfig::new(Duration::from_secs(10)) };
        let report = check_all(&h.history(), &config);
        assert_eq!(report.valid, Verdict::Invalid);
        assert!(early_expiries(&report).is_empty(), "{:#?}", report.anomalies);
        let Anomaly::Linearizable(a) = &report.anomalies[0] else { panic!("{:#?}", report.anomalies) };
        assert!(a.explanation.contains("issued as a stale read") && a.explanation.ends_with("a stale read"));
        assert!(a.early_expiry.is_none());
        // Issued as linearizable, the same read is an early expiry.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(1000));
        h.r(2, 100, 110, "k", None);
        assert_eq!(early_expiries(&check_all(&h.history(), &config)).len(), 1);
    }

    #[test]
    fn a_set_without_ttl_that_vanishes_is_not_an_early_expiry() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", None);
        h.r(2, 5000, 5010, "k", None);
        let report = check(&h, 0);
        assert_eq!(report.valid, Verdict::Invalid);
        assert!(early_expiries(&report).is_empty(), "{:#?}", report.anomalies);
        assert!(matches!(&report.anomalies[0], Anomaly::Linearizable(a) if a.explanation.contains("cannot be absent")));
    }

    #[test]
    fn late_expiry_is_allowed() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(200));
        h.r(2, 500, 510, "k", Some("a")); // still there long after its TTL: purge is lazy
        h.r(3, 520, 530, "k", None);
        h.r(2, 540, 550, "k", Some("a")); // a node whose clock lags may show it again
        let report = check(&h, 0);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
    }

    #[test]
    fn absent_after_a_delete_is_valid() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(10_000));
        h.d(1, 20, 30, "k");
        h.r(2, 40, 50, "k", None);
        // A delete concurrent with the read may also explain it.
        h.s(1, 100, 110, "j", "b", None);
        h.call(3, 120, 200, EventKind::Info, H::delete("j"));
        h.r(2, 150, 160, "j", None);
        let report = check(&h, 0);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.ttl.expired_reads, 0, "deletes are not expiries");
        // But a value read back after an acknowledged delete is stale.
        h.r(2, 300, 310, "k", Some("a"));
        assert_eq!(check(&h, 0).linearizable.valid, Verdict::Invalid);
    }

    #[test]
    fn an_indeterminate_set_that_did_or_did_not_happen() {
        // It happened and was read; its TTL then explains an absence after it.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", None);
        h.call(2, 20, 30, EventKind::Info, H::set("k", "b", Some(100)));
        h.r(3, 40, 50, "k", Some("b"));
        h.r(3, 200, 210, "k", None);
        assert_eq!(check(&h, 0).valid, Verdict::Valid);

        // Never seen, but its expiry is the only explanation of a later absence: still valid.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", None);
        h.pending(2, 20, H::set("k", "b", Some(100)));
        h.r(3, 200, 210, "k", None);
        let report = check(&h, 0);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");

        // Did not happen: the value acknowledged before stays.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", None);
        h.call(2, 20, 30, EventKind::Info, H::set("k", "b", Some(100)));
        h.r(3, 200, 210, "k", Some("a"));
        assert_eq!(check(&h, 0).valid, Verdict::Valid);

        // Happened or not, it cannot explain an absence before its own TTL.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(1000));
        h.call(2, 20, 30, EventKind::Info, H::set("k", "b", Some(1000)));
        h.r(3, 200, 210, "k", None);
        let report = check(&h, 0);
        let found = early_expiries(&report);
        assert_eq!(found.len(), 1, "{:#?}", report.anomalies);
        assert_eq!(found[0].others.len(), 1, "the indeterminate set may have come between");
    }

    #[test]
    fn the_slack_is_honoured() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(500));
        h.r(2, 490, 498, "k", None); // 2 ms early: within the timestamp tolerance
        assert_eq!(check(&h, 0).valid, Verdict::Valid);

        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(500));
        h.r(2, 400, 450, "k", None); // 50 ms early
        let report = check(&h, 0);
        assert_eq!(early_expiries(&report).len(), 1, "{report:#?}");
        assert_eq!(early_expiries(&report)[0].slack_ms, TIMESTAMP_TOLERANCE_MS);
        // ...which a clock nemesis that skewed the nodes 100 ms apart allows.
        let report = check(&h, 100);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.ttl.slack_ms, 100 + TIMESTAMP_TOLERANCE_MS);
    }

    #[test]
    fn an_early_expiry_is_found_even_after_overlapping_writes() {
        // Both sets overlap; either may be last, neither may have expired by the read.
        let mut h = H::new();
        h.s(1, 0, 50, "k", "a", Some(2000));
        h.s(2, 10, 60, "k", "b", Some(2000));
        h.r(3, 100, 110, "k", None);
        let report = check(&h, 0);
        let found = early_expiries(&report);
        assert_eq!(found.len(), 1, "{:#?}", report.anomalies);
        assert_eq!(found[0].others.len(), 1);
        // Had one of them a short TTL, its expiry would explain the absence.
        let mut h = H::new();
        h.s(1, 0, 50, "k", "a", Some(2000));
        h.s(2, 10, 60, "k", "b", Some(50));
        h.r(3, 100, 110, "k", None);
        assert_eq!(check(&h, 0).valid, Verdict::Valid);
    }

    #[test]
    fn an_expiry_read_cannot_come_before_a_later_write() {
        // The read ends after "a" may expire, but "b" was acknowledged before "a" could expire
        // and before the read ended, and had no TTL: the read must have been served before "b"
        // took effect, so before "a" could expire.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(100));
        h.r(2, 20, 120, "k", None);
        h.s(3, 30, 40, "k", "b", None);
        h.r(3, 130, 140, "k", Some("b"));
        let report = check(&h, 0);
        assert_eq!(report.linearizable.valid, Verdict::Invalid, "{report:#?}");
    }

    #[test]
    fn bounded_reads_are_held_to_expiry_too() {
        let bounded = |v: Option<&str>| H::read_at("k", ReadLevel::Bounded(100), v);
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(1000));
        h.call(2, 200, 210, EventKind::Ok, bounded(None)); // a acknowledged > 100 ms before
        h.call(2, 1500, 1510, EventKind::Ok, bounded(None)); // expired: fine
        h.call(2, 1600, 1610, EventKind::Ok, bounded(Some("a"))); // late: fine
        let report = check(&h, 0);
        assert_eq!(report.staleness.valid, Verdict::Invalid, "{report:#?}");
        let found = early_expiries(&report);
        assert_eq!(found.len(), 1, "{:#?}", report.anomalies);
        assert_eq!((found[0].found_by.as_str(), found[0].read.invoke_ns), ("staleness", 200_000_000));
    }

    #[test]
    fn durability_demands_only_writes_that_cannot_have_expired_or_been_deleted() {
        // Expired by the final read: not demanded.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(200));
        h.r(F, 1000, 1010, "k", None);
        // Deleted after: not demanded.
        h.s(2, 0, 10, "j", "x", None);
        h.d(2, 20, 30, "j");
        h.r(F + 1, 1000, 1010, "j", None);
        let report = check(&h, 0);
        assert_eq!(report.durability.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");

        // Unexpired at the final read: demanded.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(60_000));
        h.r(F, 1000, 1010, "k", None);
        let report = check(&h, 0);
        assert_eq!(report.durability.valid, Verdict::Invalid, "{report:#?}");
        let lost = report.anomalies.iter().find_map(|a| match a {
            Anomaly::Durability(l) => Some(l),
            _ => None,
        });
        let lost = lost.expect("a lost write");
        assert_eq!(lost.lost.op, H::set("k", "a", Some(60_000)));
        assert!(lost.explanation.contains("TTL"), "{}", lost.explanation);

        // A value read back after an acknowledged delete is a lost delete.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", None);
        h.d(1, 20, 30, "k");
        h.r(F, 1000, 1010, "k", Some("a"));
        assert_eq!(check(&h, 0).durability.valid, Verdict::Invalid);
    }

    #[test]
    fn absence_is_explained_by_deletes_then_expiry() {
        let mut h = H::new();
        h.s(1, 0, 10, "k", "a", Some(100));
        h.call(2, 5, 15, EventKind::Info, H::delete("k"));
        h.r(3, 200, 210, "k", None);
        let (ops, _) = pair(&h.history());
        let refs: Vec<&Operation> = ops.iter().collect();
        let read = refs.iter().find(|o| matches!(o.op, Op::Read { .. })).unwrap();
        assert_eq!(absence_after(refs[0], read, &refs, 3), Absence::Deleted);
        assert!(!saw_expiry(read, &refs, 3), "a delete may explain it");
        let no_delete: Vec<&Operation> = refs.iter().copied().filter(|o| !matches!(o.op, Op::Delete { .. })).collect();
        assert_eq!(absence_after(refs[0], read, &no_delete, 3), Absence::Expired);
        assert!(saw_expiry(read, &no_delete, 3));
        assert_eq!(earliest_expiry_ns(refs[0], 3), Some(97_000_000));
    }

    mod random {
        //! Random cache histories correct by construction, with expiry: the search must accept
        //! them all, and must agree with the absence rule when a read is made to miss its entry.

        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        use super::*;
        use crate::checker::staleness;
        use crate::checker::test_history::{to_events, Gen};
        use crate::history::Event;

        /// A sequential run of the cache, `n` operations 1 ms apart: each set stamps its expiry at
        /// its own linearization point (so no earlier than its invocation plus its TTL, as a node
        /// does), and a read after the expiry finds the entry absent or, sometimes, still there
        /// (late). Each operation then gets an interval around its point; about `concurrency`
        /// overlap at any time.
        fn cache_history(rng: &mut StdRng, n: usize, concurrency: u64) -> Vec<Event> {
            const STEP: u64 = 1_000_000;
            let width = STEP * concurrency;
            let mut state: Option<(String, Option<u64>)> = None; // value, expiry in ns
            let mut gens = Vec::new();
            for i in 0..n {
                let point = width + STEP * (i as u64 + 1);
                let roll = rng.gen_range(0..100);
                // Indeterminate operations happened or not; failed ones did not.
                let outcome = match rng.gen_range(0..20) {
                    0 => EventKind::Info,
                    1 => EventKind::Fail,
                    _ => EventKind::Ok,
                };
                let happened = outcome == EventKind::Ok || (outcome == EventKind::Info && rng.gen_bool(0.5));
                let (op, outcome) = if roll < 30 {
                    let value = format!("v{i}");
                    let ttl_ms = rng.gen_bool(0.8).then(|| rng.gen_range(1..=3 * concurrency + 10));
                    if happened {
                        state = Some((value.clone(), ttl_ms.map(|t| point + t * STEP)));
                    }
                    (Op::Set { key: "k".into(), value, ttl_ms }, outcome)
                } else if roll < 38 {
                    if happened {
                        state = None;
                    }
                    (Op::Delete { key: "k".into() }, outcome)
                } else {
                    let value = match &state {
                        Some((v, expiry)) if expiry.is_none_or(|e| point < e) || rng.gen_bool(0.3) => Some(v.clone()),
                        _ => None,
                    };
                    let outcome = if outcome == EventKind::Ok { EventKind::Ok } else { EventKind::Info };
                    (Op::Read { key: "k".into(), level: ReadLevel::Linearizable, value, after: None }, outcome)
                };
                let pending = outcome == EventKind::Info && rng.gen_bool(0.3);
                gens.push(Gen {
                    op,
                    outcome,
                    pending,
                    invoke: point - rng.gen_range(1..=width),
                    complete: point + rng.gen_range(1..=width),
                });
            }
            to_events(gens)
        }

        #[test]
        fn random_cache_histories_are_valid_and_the_absence_rule_agrees_with_the_search() {
            let config = CheckConfig::new(Duration::from_secs(30));
            let mut proven = 0;
            for seed in 0..300 {
                let mut rng = StdRng::seed_from_u64(seed);
                let n = rng.gen_range(1..120);
                let concurrency = rng.gen_range(1..=8);
                let mut events = cache_history(&mut rng, n, concurrency);
                let report = check_all(&events, &config);
                assert_eq!(report.valid, Verdict::Valid, "seed {seed}: {:#?}", report.anomalies);

                // The same reads at a bound are fine for the staleness checker.
                let mut bounded = events.clone();
                for e in &mut bounded {
                    if let Op::Read { level, .. } = &mut e.op {
                        *level = ReadLevel::Bounded(seed % 3);
                    }
                }
                let (ops, _) = pair(&bounded);
                let stale = staleness::check(&ops, config.slack_ms());
                assert_eq!(
                    stale.valid,
                    Verdict::Valid,
                    "seed {seed}: {:#?} {:#?}",
                    stale.violations,
                    stale.early_expiries
                );

                // Make one read that saw a value miss it. When the absence rule proves that
                // impossible, the search must find the history invalid too.
                let (ops, _) = pair(&events);
                let reads: Vec<&Operation> = ops
                    .iter()
                    .filter(|o| o.outcome == EventKind::Ok && matches!(o.op, Op::Read { value: Some(_), .. }))
                    .collect();
                if reads.is_empty() {
                    continue;
                }
                let read = reads[rng.gen_range(0..reads.len())].clone();
                let at = read.complete_index.unwrap() as usize;
                let Op::Read { value, .. } = &mut events[at].op else { unreachable!() };
                *value = None;
                let (ops, _) = pair(&events);
                let refs: Vec<&Operation> = ops.iter().collect();
                let read = refs.iter().find(|o| o.complete_index == Some(at as u64)).unwrap();
                let anchors = refs.iter().copied().filter(|o| o.is_acknowledged_write() && o.precedes(read));
                if let Some((anchor, _)) = unexplained_absence(read, anchors, &refs, config.slack_ms()) {
                    proven += 1;
                    let report = check_all(&events, &config);
                    assert_eq!(report.linearizable.valid, Verdict::Invalid, "seed {seed}");
                    if anchor.ttl_ms().is_some() {
                        assert!(report.ttl.early_expiries > 0, "seed {seed}: {:#?}", report.anomalies);
                    }
                }
            }
            assert!(proven >= 15, "only {proven} corrupted histories were provably invalid");
        }
    }
}
