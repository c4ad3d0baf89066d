//! Liveness under overload: while the harness floods the cluster with writes (`--overload`,
//! [`crate::overload`]), the leader must stay unless a fault deposes it, and writes must keep
//! committing.
//!
//! The runner samples every node's own view (term and leader) a few times a second and records
//! when each write was acknowledged (the flood's and the workload's). [`judge`] is the rule, a
//! pure function of those samples, the commit times and the fault windows:
//!
//! * **healthy time** is the run minus every fault window, each stretched by `grace` past its
//!   end (time for an election and the first write after a heal), and minus the first `grace`
//!   of the run;
//! * a **leader change** is a rise of the highest term any node reports between two samples;
//!   one whose whole interval lies in healthy time was caused by load alone: `invalid`;
//! * a **commit gap** is a stretch of healthy time with no acknowledged write; one longer than
//!   `max_gap` means writes stopped committing: `invalid`;
//! * no sample answered at all, or no write was ever acknowledged: `invalid` (the cluster never
//!   served the flood).
//!
//! Like every checker it trusts only what the harness saw: terms as nodes reported them
//! (a term only rises), and acknowledgement times on the history's clock.

use serde::{Deserialize, Serialize};

use super::Verdict;
use crate::nemesis::FaultWindow;

/// The nodes' view of leadership at one moment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadershipSample {
    /// ns on the history's clock.
    pub at_ns: u64,
    /// The highest term any node reported; `None` if none answered.
    pub term: Option<u64>,
    /// The leader named in that term, if any.
    pub leader: Option<u64>,
}

/// The rule's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessRule {
    /// When the flood started (ns): healthy time begins `grace_ns` later.
    pub start_ns: u64,
    /// When the flood stopped (ns).
    pub end_ns: u64,
    /// How long after a fault window (and after the start) the cluster may take to settle.
    pub grace_ns: u64,
    /// The longest healthy stretch without an acknowledged write that is still live.
    pub max_gap_ns: u64,
}

/// A term rise while the cluster was healthy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    pub from_term: u64,
    pub to_term: u64,
    /// Between these two samples (ns).
    pub after_ns: u64,
    pub before_ns: u64,
    pub new_leader: Option<u64>,
}

/// A healthy stretch without an acknowledged write.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitGap {
    pub from_ns: u64,
    pub to_ns: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LivenessReport {
    pub valid: Verdict,
    pub rule: LivenessRule,
    /// Leadership samples taken.
    pub samples: usize,
    pub first_term: Option<u64>,
    pub last_term: Option<u64>,
    /// Every term rise seen, healthy or not.
    pub term_changes: usize,
    /// The term rises no fault explains.
    pub healthy_leader_changes: Vec<LeaderChange>,
    /// The longest healthy stretch without an acknowledged write (ms), and where it was.
    pub longest_gap_ms: f64,
    pub longest_gap: Option<CommitGap>,
    /// Acknowledged writes judged.
    pub commits: usize,
    pub explanation: String,
}

/// Judges one overload run; `commits_ns` need not be sorted.
pub fn judge(
    samples: &[LeadershipSample],
    commits_ns: &[u64],
    windows: &[FaultWindow],
    rule: LivenessRule,
) -> LivenessReport {
    let healthy = healthy_intervals(windows, rule);
    let is_healthy = |from: u64, to: u64| healthy.iter().any(|&(a, b)| a <= from && to <= b);

    let answered: Vec<(u64, u64, Option<u64>)> =
        samples.iter().filter_map(|s| s.term.map(|t| (s.at_ns, t, s.leader))).collect();
    let mut term_changes = 0;
    let mut healthy_leader_changes = Vec::new();
    for pair in answered.windows(2) {
        let ((after_ns, from_term, _), (before_ns, to_term, new_leader)) = (pair[0], pair[1]);
        if to_term > from_term {
            term_changes += 1;
            if is_healthy(after_ns, before_ns) {
                healthy_leader_changes.push(LeaderChange { from_term, to_term, after_ns, before_ns, new_leader });
            }
        }
    }

    let mut commits: Vec<u64> = commits_ns.to_vec();
    commits.sort_unstable();
    let mut longest: Option<CommitGap> = None;
    for &(a, b) in &healthy {
        let inside = {
            let lo = commits.partition_point(|&t| t < a);
            let hi = commits.partition_point(|&t| t <= b);
            &commits[lo..hi]
        };
        let mut edges = Vec::with_capacity(inside.len() + 2);
        edges.push(a);
        edges.extend_from_slice(inside);
        edges.push(b);
        for pair in edges.windows(2) {
            let gap = CommitGap { from_ns: pair[0], to_ns: pair[1] };
            if longest.is_none_or(|l| gap.to_ns - gap.from_ns > l.to_ns - l.from_ns) {
                longest = Some(gap);
            }
        }
    }
    let longest_gap_ns = longest.map_or(0, |g| g.to_ns - g.from_ns);

    let mut problems = Vec::new();
    if answered.is_empty() {
        problems.push("no node ever reported its term".to_string());
    }
    if commits.is_empty() {
        problems.push("no write was ever acknowledged".to_string());
    }
    for c in &healthy_leader_changes {
        problems.push(format!(
            "term {} -> {} between {:.1}s and {:.1}s with no fault in force",
            c.from_term,
            c.to_term,
            c.after_ns as f64 / 1e9,
            c.before_ns as f64 / 1e9
        ));
    }
    if longest_gap_ns > rule.max_gap_ns {
        let g = longest.expect("a gap was measured");
        problems.push(format!(
            "no write acknowledged for {:.1}s ({:.1}s to {:.1}s) with no fault in force (limit {:.1}s)",
            longest_gap_ns as f64 / 1e9,
            g.from_ns as f64 / 1e9,
            g.to_ns as f64 / 1e9,
            rule.max_gap_ns as f64 / 1e9
        ));
    }
    let valid = if problems.is_empty() { Verdict::Valid } else { Verdict::Invalid };
    let explanation = if problems.is_empty() {
        format!(
            "{} term change(s), all explained by faults; longest healthy stretch without a commit {:.2}s",
            term_changes,
            longest_gap_ns as f64 / 1e9
        )
    } else {
        problems.join("; ")
    };
    LivenessReport {
        valid,
        rule,
        samples: samples.len(),
        first_term: answered.first().map(|s| s.1),
        last_term: answered.last().map(|s| s.1),
        term_changes,
        healthy_leader_changes,
        longest_gap_ms: longest_gap_ns as f64 / 1e6,
        longest_gap: longest,
        commits: commits.len(),
        explanation,
    }
}

/// `[start + grace, end]` minus every window stretched to `[start, end + grace]`, as sorted,
/// disjoint intervals.
fn healthy_intervals(windows: &[FaultWindow], rule: LivenessRule) -> Vec<(u64, u64)> {
    let mut faulted: Vec<(u64, u64)> =
        windows.iter().map(|w| (w.start_ns, w.end_ns.map_or(u64::MAX, |e| e.saturating_add(rule.grace_ns)))).collect();
    faulted.sort_unstable();
    let mut healthy = Vec::new();
    let mut cursor = rule.start_ns.saturating_add(rule.grace_ns);
    for (start, end) in faulted {
        if start > cursor {
            healthy.push((cursor, start.min(rule.end_ns)));
        }
        cursor = cursor.max(end);
        if cursor >= rule.end_ns {
            break;
        }
    }
    if cursor < rule.end_ns {
        healthy.push((cursor, rule.end_ns));
    }
    healthy.retain(|(a, b)| a < b);
    healthy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::NemesisKind;

    const S: u64 = 1_000_000_000;

    fn rule() -> LivenessRule {
        LivenessRule { start_ns: 0, end_ns: 60 * S, grace_ns: 2 * S, max_gap_ns: 2 * S }
    }

    fn sample(at_s: f64, term: u64, leader: u64) -> LeadershipSample {
        LeadershipSample { at_ns: (at_s * S as f64) as u64, term: Some(term), leader: Some(leader) }
    }

    /// A commit every 100 ms from 0 to 60 s.
    fn steady() -> Vec<u64> {
        (0..600).map(|i| i * S / 10).collect()
    }

    #[test]
    fn a_steady_cluster_is_live() {
        let samples: Vec<_> = (0..60).map(|i| sample(i as f64, 1, 1)).collect();
        let report = judge(&samples, &steady(), &[], rule());
        assert_eq!(report.valid, Verdict::Valid, "{}", report.explanation);
        assert_eq!(report.term_changes, 0);
        assert!(report.longest_gap_ms <= 100.0 + 1e-6);
    }

    #[test]
    fn a_term_change_with_no_fault_is_invalid() {
        let mut samples: Vec<_> = (0..30).map(|i| sample(i as f64, 1, 1)).collect();
        samples.extend((30..60).map(|i| sample(i as f64, 2, 3)));
        let report = judge(&samples, &steady(), &[], rule());
        assert_eq!(report.valid, Verdict::Invalid);
        assert_eq!(report.healthy_leader_changes.len(), 1);
        assert_eq!(report.healthy_leader_changes[0].new_leader, Some(3));
    }

    #[test]
    fn a_term_change_inside_a_fault_or_its_grace_is_explained() {
        let mut samples: Vec<_> = (0..30).map(|i| sample(i as f64, 1, 1)).collect();
        // The leader is killed from 25 s to 28 s; the new term shows at 30 s, within the grace.
        samples.extend((30..60).map(|i| sample(i as f64, 2, 3)));
        let window = FaultWindow::plain(NemesisKind::Kill, "kill -9 [1]", vec![1], 25 * S, Some(28 * S));
        let mut commits = steady();
        commits.retain(|&t| !(25 * S..29 * S).contains(&t));
        let report = judge(&samples, &commits, &[window], rule());
        assert_eq!(report.valid, Verdict::Valid, "{}", report.explanation);
        assert_eq!(report.term_changes, 1);
    }

    #[test]
    fn a_stall_while_healthy_is_invalid_and_located() {
        let samples: Vec<_> = (0..60).map(|i| sample(i as f64, 1, 1)).collect();
        let mut commits = steady();
        commits.retain(|&t| !(20 * S..25 * S).contains(&t));
        let report = judge(&samples, &commits, &[], rule());
        assert_eq!(report.valid, Verdict::Invalid);
        let gap = report.longest_gap.unwrap();
        assert!(gap.from_ns < 20 * S && gap.to_ns >= 25 * S, "{gap:?}");
        assert!(report.explanation.contains("no write acknowledged"), "{}", report.explanation);
    }

    #[test]
    fn no_commits_or_no_answers_are_invalid() {
        let samples: Vec<_> = (0..60).map(|i| sample(i as f64, 1, 1)).collect();
        assert_eq!(judge(&samples, &[], &[], rule()).valid, Verdict::Invalid);
        let silent: Vec<_> = (0..60).map(|i| LeadershipSample { at_ns: i * S, term: None, leader: None }).collect();
        assert_eq!(judge(&silent, &steady(), &[], rule()).valid, Verdict::Invalid);
    }

    #[test]
    fn healthy_time_skips_the_start_and_stretched_windows() {
        let windows = [
            FaultWindow::plain(NemesisKind::Pause, "pause [2]", vec![2], 10 * S, Some(15 * S)),
            FaultWindow::plain(NemesisKind::Partition, "partition", vec![1], 16 * S, Some(20 * S)),
            FaultWindow::plain(NemesisKind::Kill, "kill -9 [3]", vec![3], 50 * S, None),
        ];
        assert_eq!(healthy_intervals(&windows, rule()), vec![(2 * S, 10 * S), (22 * S, 50 * S)]);
    }
}
