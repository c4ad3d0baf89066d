//! Convergence: at the end, with the cluster quiet, every replica holds the same state at the
//! same applied index.
//!
//! The runner samples every node's admin `Status` (local only: each node's own `applied` index and
//! the `state_hash` of its cache at that index, read together) repeatedly until one sample finds
//! every node at the same applied index, or a deadline passes (the leader's periodic tick keeps
//! appending entries, so nodes are rarely all at the same index for long). [`judge`] is the rule,
//! a pure function of those samples:
//!
//! * the state at an applied index is a function of the log, so any two observations (in any
//!   samples) of the same applied index with different hashes are a divergence: `invalid`;
//! * otherwise, a sample where every node answered at one applied index (with one hash, then) is
//!   convergence: `valid`;
//! * otherwise `unknown`: the nodes were never seen together, with what was seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Verdict;

/// One node's answer in one sample; `applied` and `state_hash` are `None` if it did not answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeSample {
    pub node: u64,
    pub applied: Option<u64>,
    pub state_hash: Option<u64>,
}

/// Every node, sampled once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the sample was taken, ns on the history's clock.
    pub at_ns: u64,
    pub nodes: Vec<NodeSample>,
}

/// Two replicas with different states at the same applied index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub applied: u64,
    /// `(node, state_hash)` for every observation of that index.
    pub hashes: Vec<(u64, u64)>,
    pub explanation: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConvergenceReport {
    pub valid: Verdict,
    /// Samples taken.
    pub samples: usize,
    /// The applied index every node was seen at together, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// The state hash they agreed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// For `unknown` (and `invalid`): the last sample seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sample: Option<Sample>,
    pub explanation: String,
}

/// Judges `samples` (see the module doc).
pub fn judge(samples: &[Sample]) -> ConvergenceReport {
    let mut report = ConvergenceReport {
        valid: Verdict::Unknown,
        samples: samples.len(),
        applied: None,
        state_hash: None,
        divergence: None,
        last_sample: samples.last().cloned(),
        explanation: String::new(),
    };
    // Every observation, by applied index.
    let mut seen: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for s in samples {
        for n in &s.nodes {
            if let (Some(applied), Some(hash)) = (n.applied, n.state_hash) {
                let at = seen.entry(applied).or_default();
                if !at.contains(&(n.node, hash)) {
                    at.push((n.node, hash));
                }
            }
        }
    }
    if let Some((applied, hashes)) = seen.iter().find(|(_, h)| h.iter().any(|(_, x)| *x != h[0].1)) {
        let list = hashes.iter().map(|(n, h)| format!("node {n}: {h:#018x}")).collect::<Vec<_>>().join(", ");
        report.valid = Verdict::Invalid;
        report.explanation = format!("replicas diverged: different state hashes at applied index {applied} ({list})");
        report.divergence =
            Some(Divergence { applied: *applied, hashes: hashes.clone(), explanation: report.explanation.clone() });
        return report;
    }
    let together = samples.iter().find_map(|s| {
        let first = s.nodes.first()?;
        let applied = first.applied?;
        s.nodes.iter().all(|n| n.applied == Some(applied)).then_some((applied, first.state_hash))
    });
    match together {
        Some((applied, hash)) => {
            report.valid = Verdict::Valid;
            report.applied = Some(applied);
            report.state_hash = hash;
            report.last_sample = None;
            report.explanation = format!("every node at applied index {applied} with the same state hash");
        }
        None => {
            let last = samples.last().map_or("no samples".to_string(), |s| {
                s.nodes
                    .iter()
                    .map(|n| match n.applied {
                        Some(a) => format!("node {} at {a}", n.node),
                        None => format!("node {} did not answer", n.node),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            report.explanation =
                format!("never saw every node at the same applied index in {} samples; last: {last}", samples.len());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ns: u64, nodes: &[(u64, Option<(u64, u64)>)]) -> Sample {
        Sample {
            at_ns,
            nodes: nodes
                .iter()
                .map(|(node, s)| NodeSample { node: *node, applied: s.map(|s| s.0), state_hash: s.map(|s| s.1) })
                .collect(),
        }
    }

    #[test]
    fn same_index_same_hash_is_valid() {
        let samples = vec![
            sample(1, &[(1, Some((10, 0xa))), (2, Some((9, 0x9))), (3, None)]),
            sample(2, &[(1, Some((11, 0xb))), (2, Some((11, 0xb))), (3, Some((11, 0xb)))]),
        ];
        let r = judge(&samples);
        assert_eq!(r.valid, Verdict::Valid, "{r:#?}");
        assert_eq!((r.applied, r.state_hash), (Some(11), Some(0xb)));
    }

    #[test]
    fn same_index_different_hash_is_invalid_even_across_samples() {
        let samples = vec![sample(1, &[(1, Some((10, 0xa))), (2, Some((10, 0xa))), (3, Some((10, 0xbad)))])];
        let r = judge(&samples);
        assert_eq!(r.valid, Verdict::Invalid, "{r:#?}");
        assert_eq!(r.divergence.as_ref().unwrap().applied, 10);
        assert!(r.explanation.contains("diverged"), "{}", r.explanation);

        let samples = vec![
            sample(1, &[(1, Some((10, 0xa))), (2, Some((9, 0x9)))]),
            sample(2, &[(1, Some((11, 0xb))), (2, Some((10, 0xc)))]),
        ];
        assert_eq!(judge(&samples).valid, Verdict::Invalid);
    }

    #[test]
    fn never_together_is_unknown_with_what_was_seen() {
        let samples = vec![
            sample(1, &[(1, Some((10, 0xa))), (2, Some((9, 0x9)))]),
            sample(2, &[(1, Some((12, 0xc))), (2, None)]),
        ];
        let r = judge(&samples);
        assert_eq!(r.valid, Verdict::Unknown, "{r:#?}");
        assert!(r.explanation.contains("node 2 did not answer"), "{}", r.explanation);
        assert!(r.last_sample.is_some());
        assert_eq!(judge(&[]).valid, Verdict::Unknown);
    }
}
