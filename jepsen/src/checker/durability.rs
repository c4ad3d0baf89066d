//! Durability: after the final heal and a restart of every node, every acknowledged write that was
//! not later overwritten is still there.
//!
//! The runner ends a test by killing every node (`kill -9`), restarting them all on their data
//! dirs and reading every key the workload used with a linearizable read, as operations of the
//! *final* processes ([`FINAL_PROCESS_BASE`] and up). Those reads are ordinary operations of the
//! history, so the linearizability checker already judges them; this checker states the one rule
//! a lost write breaks, for a clearer anomaly:
//!
//! for each key, take its last `Ok` final read `F`. If `F` returned a value written by `W`, it is
//! a lost write if some acknowledged write, compare-and-set, set or delete `A` of the key was
//! invoked after `W` completed (so `W` is provably older than `A`) and completed before `F` was
//! invoked. Values are unique per write, so nothing can have written `W`'s value again after `A`
//! (a value may be seen after its TTL, but never after it was overwritten or deleted). If `F`
//! returned absent, it is a lost write if some acknowledged write completed before `F` was
//! invoked and nothing explains the absence ([`super::ttl::unexplained_absence`]): no delete can
//! have come after it, and neither it nor any set that may have followed it can have expired by
//! the time `F` completed. So a write whose TTL may have passed, or that may have been deleted,
//! is not demanded.
//!
//! Indeterminate writes (`Info`, or never completed) are never `A` (not acknowledged), and a value
//! written by one is never provably older than anything (it may have taken effect at any time
//! after its invocation), so they cannot make a key invalid either way. A final read that returns
//! a value nobody wrote is left to the linearizability checker. A key whose final reads all failed
//! is `unknown`; a history with no final reads at all (the final phase did not run) is not judged.

use serde::{Deserialize, Serialize};

use super::operation::Operation;
use super::ttl;
use super::Verdict;
use crate::history::{EventKind, Op, Process};

/// Process ids from here up are the final reads' (workers count up from 0, far below).
pub const FINAL_PROCESS_BASE: Process = 1 << 40;

/// Whether `process` is one of the final reads'.
pub fn is_final_process(process: Process) -> bool {
    process >= FINAL_PROCESS_BASE
}

/// One acknowledged write the final read did not see.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LostWrite {
    pub key: String,
    /// The final read (after every node was restarted).
    pub final_read: Operation,
    /// The acknowledged write it should have seen (or something newer than it).
    pub lost: Operation,
    /// The write of the value the final read returned; `None` if it returned absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_writer: Option<Operation>,
    pub explanation: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DurabilityReport {
    pub valid: Verdict,
    /// Whether the history has final reads at all (if not, nothing was judged).
    pub final_reads: bool,
    /// Keys with an `Ok` final read, judged.
    pub keys_checked: usize,
    /// Keys of the history no final read answered for.
    pub unread_keys: Vec<String>,
    pub lost: Vec<LostWrite>,
}

/// Judges the final reads of `ops` (from [`super::operation::pair`]); `slack_ms` is the TTL slack.
pub fn check(ops: &[Operation], slack_ms: u64) -> DurabilityReport {
    let by_key = super::operation::by_key(ops);
    let final_reads = ops.iter().any(|o| is_final_process(o.process));
    let mut report = DurabilityReport {
        valid: Verdict::Valid,
        final_reads,
        keys_checked: 0,
        unread_keys: Vec::new(),
        lost: Vec::new(),
    };
    if !final_reads {
        return report;
    }
    for (key, ops) in by_key {
        let last_final = ops
            .iter()
            .copied()
            .filter(|o| is_final_process(o.process) && o.outcome == EventKind::Ok && matches!(o.op, Op::Read { .. }))
            .max_by_key(|o| o.invoke_ns);
        let Some(read) = last_final else {
            report.unread_keys.push(key.to_string());
            continue;
        };
        report.keys_checked += 1;
        if let Some(lost) = check_key(key, read, &ops, slack_ms) {
            report.lost.push(lost);
        }
    }
    report.valid = if !report.lost.is_empty() {
        Verdict::Invalid
    } else if !report.unread_keys.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    report
}

fn check_key(key: &str, read: &Operation, ops: &[&Operation], slack_ms: u64) -> Option<LostWrite> {
    let Op::Read { value, .. } = &read.op else { return None };
    // Acknowledged writes and deletes done before the final read began, latest acknowledged
    // first: the lost write we report is the most recent one.
    let mut acked: Vec<&Operation> =
        ops.iter().copied().filter(|o| o.is_acknowledged_mutation() && o.precedes(read)).collect();
    acked.sort_by_key(|o| std::cmp::Reverse(o.complete_ns));
    match value.as_deref() {
        None => {
            let anchors = acked.iter().copied().filter(|o| o.written_value().is_some());
            let (lost, _) = ttl::unexplained_absence(read, anchors, ops, slack_ms)?;
            let ttl_note = match lost.ttl_ms() {
                Some(ttl) => format!(
                    " (its TTL of {ttl}ms cannot have passed by the final read's completion, with {slack_ms}ms slack: \
                     lost, or expired early)"
                ),
                None => String::new(),
            };
            Some(LostWrite {
                key: key.to_string(),
                final_read: read.clone(),
                lost: lost.clone(),
                value_writer: None,
                explanation: format!(
                    "acknowledged write lost: after every node restarted, {key} is absent, but {lost} was \
                     acknowledged before the final read {read}, and no delete can have come after it{ttl_note}"
                ),
            })
        }
        Some(v) => {
            // The writer of the value read; unknown values are the linearizability checker's.
            let writer = ops.iter().copied().find(|o| o.outcome != EventKind::Fail && o.written_value() == Some(v))?;
            let lost = acked.into_iter().find(|a| writer.precedes(a))?;
            let what = if matches!(lost.op, Op::Delete { .. }) { "delete" } else { "write" };
            Some(LostWrite {
                key: key.to_string(),
                final_read: read.clone(),
                lost: lost.clone(),
                value_writer: Some(writer.clone()),
                explanation: format!(
                    "acknowledged {what} lost: after every node restarted, {key} holds {v:?} from {writer}, which \
                     completed before {lost} was invoked; that acknowledged {what} finished before the final read \
                     {read}"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::operation::pair;
    use super::super::test_history::H;
    use super::*;

    const F: Process = FINAL_PROCESS_BASE;

    fn run(h: &H) -> DurabilityReport {
        let (ops, errors) = pair(&h.history());
        assert!(errors.is_empty(), "{errors:?}");
        check(&ops, ttl::TIMESTAMP_TOLERANCE_MS)
    }

    #[test]
    fn an_older_value_after_the_restart_is_a_lost_write() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.w(2, 20, 30, "k", "b"); // acknowledged, invoked after "a" completed
        h.r(F, 100, 110, "k", Some("a"));
        let report = run(&h);
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.lost.len(), 1);
        assert_eq!(report.lost[0].lost.written_value(), Some("b"));
        assert!(report.lost[0].explanation.contains("acknowledged write lost"), "{}", report.lost[0].explanation);
        // The linearizability checker agrees.
        let (ops, _) = pair(&h.history());
        assert_eq!(
            super::super::linearizable::check(&ops, std::time::Duration::from_secs(5), 0).result.verdict(),
            Verdict::Invalid
        );
    }

    #[test]
    fn absent_after_an_acknowledged_write_is_a_lost_write() {
        let mut h = H::new();
        h.call(1, 0, 10, EventKind::Ok, H::cas("k", None, "a"));
        h.r(F, 100, 110, "k", None);
        let report = run(&h);
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.lost[0].value_writer, None);
    }

    #[test]
    fn the_latest_write_or_a_concurrent_one_is_fine() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.w(2, 20, 30, "k", "b"); // overwrote "a": "a" need not survive
        h.r(F, 100, 110, "k", Some("b"));
        // Two concurrent acknowledged writes: either may be the last.
        h.w(1, 40, 60, "j", "x");
        h.w(2, 50, 70, "j", "y");
        h.r(F + 1, 100, 110, "j", Some("x"));
        let report = run(&h);
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.keys_checked, 2);
    }

    #[test]
    fn indeterminate_writes_are_valid_either_way() {
        for seen in ["a", "b"] {
            let mut h = H::new();
            h.w(1, 0, 10, "k", "a");
            h.call(2, 20, 30, EventKind::Info, H::write("k", "b"));
            h.r(F, 100, 110, "k", Some(seen));
            assert_eq!(run(&h).valid, Verdict::Valid, "final read saw {seen}");
        }
        // An indeterminate write read back, then an acknowledged one invoked after it: the
        // indeterminate write may have taken effect last.
        let mut h = H::new();
        h.pending(2, 0, H::write("k", "b"));
        h.w(1, 20, 30, "k", "a");
        h.r(F, 100, 110, "k", Some("b"));
        assert_eq!(run(&h).valid, Verdict::Valid);
    }

    #[test]
    fn unread_keys_are_unknown_and_no_final_reads_judge_nothing() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.w(1, 20, 30, "j", "x");
        h.r(F, 100, 110, "k", Some("a"));
        h.call(F + 1, 120, 130, EventKind::Fail, H::read("j"));
        let report = run(&h);
        assert_eq!(report.valid, Verdict::Unknown, "{report:#?}");
        assert_eq!(report.unread_keys, vec!["j".to_string()]);

        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        let report = run(&h);
        assert!(!report.final_reads);
        assert_eq!(report.valid, Verdict::Valid);
    }
}
