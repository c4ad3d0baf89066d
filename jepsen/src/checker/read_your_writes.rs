//! Read-your-writes: a read that carried `min_version` (the log index of the same worker's
//! acknowledged write `W` of the key) never returns a version older than `W`, at whatever level
//! it was issued (docs/ARCHITECTURE.md §3.5; the workload records the pin as [`Op::Read`]'s `after`).
//!
//! **The rule.** For an `Ok` read `r` pinned to `W` (an `Ok` write, cas, set or delete of the
//! read's key; a pin naming anything else is no pin: only acknowledged writes have a version):
//! * **older-value**: `r` returned `v` (not `W`'s own value), and every write of `v` that may have
//!   happened (not `Fail`) completed before `W` was invoked. Then `W` takes effect after `v` in
//!   every linearization: a replica that had applied `W` no longer held `v`;
//! * **absent**: `r` returned absent, `W` wrote a value, and nothing explains the absence: no
//!   delete may have come after `W` (one that did not complete before `W` was invoked) and before
//!   the read completed, and neither `W` nor a set that may have come after it can have expired by
//!   then ([`super::ttl::absence_after`], with the TTL slack for clock skew).
//!
//! A read pinned to a delete may return absent, or any value whose write may have come after the
//! delete.
//!
//! **Why it is sound.** Like the other checkers it trusts only the history: values and the one
//! test clock, never the version numbers the system reports (the pin names `W` by its value, or a
//! delete by its invocation's index). It only uses order real time proves, so every violation is
//! real; it may miss some (two overlapping writes whose order only the log knows). A value no
//! operation wrote, or only a failed one wrote, is left to the staleness and linearizability
//! checkers. The verdict is never `unknown`.

use serde::{Deserialize, Serialize};

use super::operation::{value_str, Operation};
use super::ttl::{self, Absence};
use super::Verdict;
use crate::history::{EventKind, Op, Pin};

/// Which rule a pinned read broke.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PinRule {
    OlderValue,
    Absent,
}

/// A read that returned something older than the write it was pinned to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PinViolation {
    pub key: String,
    pub rule: PinRule,
    pub read: Operation,
    /// The acknowledged write (or delete) whose version the read carried as `min_version`.
    pub pinned_to: Operation,
    /// For `older-value`: the operation that wrote the value read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_writer: Option<Operation>,
    pub explanation: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReadYourWritesReport {
    pub valid: Verdict,
    /// `Ok` reads pinned to an acknowledged write, judged.
    pub pinned_reads: usize,
    pub violations: Vec<PinViolation>,
}

/// Checks every `Ok` pinned read of `ops` (from [`super::operation::pair`]); `slack_ms` is the
/// TTL slack.
pub fn check(ops: &[Operation], slack_ms: u64) -> ReadYourWritesReport {
    let by_key = super::operation::by_key(ops);
    let mut pinned_reads = 0;
    let mut violations = Vec::new();
    for (key, ops) in by_key {
        for read in &ops {
            let (value, pin) = match &read.op {
                Op::Read { value, after: Some(pin), .. } if read.outcome == EventKind::Ok => (value.as_deref(), pin),
                _ => continue,
            };
            let Some(pinned_to) = pinning_write(pin, &ops) else { continue };
            pinned_reads += 1;
            if let Some(v) = check_read(key, read, value, pinned_to, &ops, slack_ms) {
                violations.push(v);
            }
        }
    }
    let valid = if violations.is_empty() { Verdict::Valid } else { Verdict::Invalid };
    ReadYourWritesReport { valid, pinned_reads, violations }
}

/// The acknowledged operation of the key that `pin` names, if there is one.
fn pinning_write<'a>(pin: &Pin, ops: &[&'a Operation]) -> Option<&'a Operation> {
    ops.iter().copied().find(|o| {
        o.outcome == EventKind::Ok
            && match pin {
                Pin::Value(v) => o.written_value() == Some(v.as_str()),
                Pin::Delete(index) => o.invoke_index == *index && matches!(o.op, Op::Delete { .. }),
            }
    })
}

fn check_read(
    key: &str,
    read: &Operation,
    value: Option<&str>,
    pinned_to: &Operation,
    ops: &[&Operation],
    slack_ms: u64,
) -> Option<PinViolation> {
    let violation = |rule, value_writer: Option<&Operation>, explanation| PinViolation {
        key: key.to_string(),
        rule,
        read: read.clone(),
        pinned_to: pinned_to.clone(),
        value_writer: value_writer.cloned(),
        explanation,
    };
    let Some(v) = value else {
        pinned_to.written_value()?; // pinned to a delete: absent is what it wrote
        return match ttl::absence_after(pinned_to, read, ops, slack_ms) {
            Absence::Deleted | Absence::Expired => None,
            Absence::Unexplained { .. } => {
                let ttl = match pinned_to.ttl_ms() {
                    Some(ttl) => format!(", cannot have expired by then (TTL {ttl}ms, slack {slack_ms}ms)"),
                    None => String::new(),
                };
                let explanation = format!(
                    "{read}: absent, but it was pinned to {pinned_to}, which was acknowledged{ttl}, and no delete \
                     (nor a set that may have expired) can have come after it"
                );
                Some(violation(PinRule::Absent, None, explanation))
            }
        };
    };
    if pinned_to.written_value() == Some(v) {
        return None;
    }
    let writers: Vec<&Operation> =
        ops.iter().copied().filter(|o| o.outcome != EventKind::Fail && o.written_value() == Some(v)).collect();
    if writers.is_empty() || !writers.iter().all(|w| w.precedes(pinned_to)) {
        return None;
    }
    let writer = writers[0];
    let explanation = format!(
        "{read}: {} is older than the write it was pinned to: {writer} completed before {pinned_to} was invoked",
        value_str(Some(v))
    );
    Some(violation(PinRule::OlderValue, Some(writer), explanation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::operation::pair;
    use crate::checker::test_history::H;
    use crate::history::{Event, ReadLevel};

    fn check_history(events: &[Event]) -> ReadYourWritesReport {
        let (ops, errors) = pair(events);
        assert!(errors.is_empty(), "{errors:?}");
        check(&ops, crate::checker::ttl::TIMESTAMP_TOLERANCE_MS)
    }

    /// A stale read of `k` pinned to the write of `pin`, returning `v`.
    fn pinned(pin: &str, v: Option<&str>) -> Op {
        H::pinned("k", ReadLevel::Stale, Pin::Value(pin.into()), v)
    }

    #[test]
    fn a_pinned_read_may_return_the_pinned_value_or_a_later_one() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.w(2, 5, 30, "k", "v2"); // overlaps v1: may have come after it
        h.w(3, 40, 50, "k", "v3"); // certainly after v1
        h.call(1, 60, 70, EventKind::Ok, pinned("v1", Some("v1")));
        h.call(1, 80, 90, EventKind::Ok, pinned("v1", Some("v2")));
        h.call(1, 100, 110, EventKind::Ok, pinned("v1", Some("v3")));
        h.call(4, 120, 130, EventKind::Ok, H::read_at("k", ReadLevel::Stale, Some("v1"))); // not pinned
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.pinned_reads, 3);
    }

    #[test]
    fn a_pinned_read_of_an_older_value_is_invalid() {
        let mut h = H::new();
        h.w(2, 0, 10, "k", "v0");
        h.w(1, 20, 30, "k", "v1");
        h.call(1, 40, 50, EventKind::Ok, pinned("v1", Some("v0")));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        let v = &report.violations[0];
        assert_eq!(v.rule, PinRule::OlderValue);
        assert_eq!(v.pinned_to.op, H::write("k", "v1"));
        assert_eq!(v.value_writer.as_ref().unwrap().op, H::write("k", "v0"));
        assert!(v.explanation.contains("older than the write it was pinned to"), "{}", v.explanation);
        // Also at the linearizable level, and for a cas that pinned.
        let mut h = H::new();
        h.w(2, 0, 10, "k", "v0");
        h.call(1, 20, 30, EventKind::Ok, H::cas("k", Some("v0"), "v1"));
        h.call(1, 40, 50, EventKind::Ok, H::pinned("k", ReadLevel::Linearizable, Pin::Value("v1".into()), Some("v0")));
        assert_eq!(check_history(&h.history()).violations.len(), 1);
    }

    #[test]
    fn a_pinned_read_absent_with_no_delete_after_is_invalid() {
        let mut h = H::new();
        h.d(2, 0, 10, "k"); // before the pinning write: explains nothing
        h.w(1, 20, 30, "k", "v1");
        h.call(1, 40, 50, EventKind::Ok, pinned("v1", None));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.violations[0].rule, PinRule::Absent);
        // A set whose TTL cannot have run out yet explains nothing either.
        let mut h = H::new();
        h.s(1, 0, 10, "k", "v1", Some(1000));
        h.call(1, 20, 30, EventKind::Ok, pinned("v1", None));
        let report = check_history(&h.history());
        assert_eq!(report.violations[0].rule, PinRule::Absent, "{report:#?}");
        assert!(report.violations[0].explanation.contains("TTL 1000ms"), "{}", report.violations[0].explanation);
    }

    #[test]
    fn a_pinned_read_absent_after_a_later_delete_or_an_expiry_is_valid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.d(2, 15, 40, "k"); // after v1
        h.call(1, 50, 60, EventKind::Ok, pinned("v1", None));
        h.s(3, 100, 110, "k", "v2", Some(50));
        h.call(3, 200, 210, EventKind::Ok, pinned("v2", None)); // v2's TTL ran out
        h.d(4, 300, 310, "k");
        let delete = Pin::Delete(0); // renumbered below
        h.call(4, 320, 330, EventKind::Ok, H::pinned("k", ReadLevel::Stale, delete, None));
        let mut events = h.history();
        let index = events.iter().find(|e| e.op == H::delete("k") && e.time_ns == 300_000_000).unwrap().index;
        for e in &mut events {
            if let Op::Read { after: Some(pin @ Pin::Delete(_)), .. } = &mut e.op {
                *pin = Pin::Delete(index);
            }
        }
        let report = check_history(&events);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.pinned_reads, 3);
    }

    #[test]
    fn a_read_pinned_to_a_delete_must_not_return_a_value_from_before_it() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.d(1, 20, 30, "k");
        h.call(1, 40, 50, EventKind::Ok, H::pinned("k", ReadLevel::Stale, Pin::Delete(0), Some("v1")));
        let mut events = h.history();
        let index = events.iter().find(|e| e.op == H::delete("k")).unwrap().index;
        if let Op::Read { after, .. } = &mut events[4].op {
            *after = Some(Pin::Delete(index));
        }
        if let Op::Read { after, .. } = &mut events[5].op {
            *after = Some(Pin::Delete(index));
        }
        let report = check_history(&events);
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        assert_eq!(report.violations[0].rule, PinRule::OlderValue);
        assert_eq!(report.violations[0].pinned_to.op, H::delete("k"));
    }

    #[test]
    fn only_acknowledged_writes_pin() {
        let mut h = H::new();
        h.w(2, 0, 10, "k", "v0");
        h.call(1, 20, 30, EventKind::Info, H::write("k", "v1"));
        h.call(1, 40, 50, EventKind::Fail, H::write("k", "v2"));
        // Older than either, but neither has a version the read can have waited for.
        h.call(3, 60, 70, EventKind::Ok, pinned("v1", Some("v0")));
        h.call(3, 80, 90, EventKind::Ok, pinned("v2", None));
        let report = check_history(&h.history());
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.pinned_reads, 0);
    }
}
