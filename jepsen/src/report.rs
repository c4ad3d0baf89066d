//! The report: what a run leaves in its output dir, and the figures computed from its history.
//!
//! ```text
//! DIR/history.jsonl     every event, one JSON object a line (crate::history)
//! DIR/results.json      Results: the verdict, the checkers' report, the fault windows, figures
//! DIR/latency.svg       each operation's latency over time, fault windows shaded (crate::plot)
//! DIR/nodes/node-N.log  each node's stderr (crate::control)
//! DIR/nodes/node-N/     each node's data dir
//! ```
//!
//! `results.json`'s `valid` is the checkers' verdict (`true`, `false` or `"unknown"`), except
//! that a harness error makes it `"unknown"` and fills `harness_error`: a run the harness could
//! not carry out says nothing about the system. What the system did wrong shows in `checks`
//! (safety) and `node_exits` / `notes` (nodes that died on their own, no leader after the final
//! heal).
//!
//! Figures ([`Figures::compute`]) are measured from the history and the fault windows alone:
//! operations by kind and outcome, the fraction of operations ok while a fault was in force
//! against while healthy (by invocation time), latency percentiles of ok operations, and the
//! time from each heal to the first successful write invoked after it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::checker::{CheckReport, Verdict};
use crate::control::UnexpectedExit;
use crate::history::{Event, EventKind, Op};
use crate::nemesis::FaultWindow;

/// Everything `results.json` holds.
#[derive(Serialize)]
pub struct Results {
    /// `true` (valid), `false` (invalid) or `"unknown"` (a checker ran out of budget, or the
    /// harness failed).
    pub valid: Verdict,
    pub seed: u64,
    /// Wall-clock time (UTC) of the history clock's zero, to line fault windows and events up
    /// with the node logs' timestamps; `None` if the run never started.
    pub started_at: Option<String>,
    /// What the reads were held to (see `runner::CheckModel`).
    pub model: crate::runner::CheckModel,
    /// Why the harness could not complete the run (not a finding about the system).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness_error: Option<String>,
    /// The checkers' report; `None` if the run never got to a history.
    pub checks: Option<CheckReport>,
    pub faults: Vec<FaultWindow>,
    pub figures: Option<Figures>,
    /// Under `--overload`: what the flood of writes did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<crate::overload::FloodFigures>,
    /// Nodes that exited without the harness killing them.
    pub node_exits: Vec<UnexpectedExit>,
    /// Nodes the `crash-points` nemesis armed that died at the armed fault point (asked for,
    /// so not a finding; what counts is whether the history stays valid).
    pub fault_point_exits: Vec<crate::control::FaultPointExit>,
    /// Observations about the system that are not safety checks (e.g. no leader after heal).
    pub notes: Vec<String>,
    /// How long each phase took, in seconds.
    pub timings: Timings,
    /// The test's settings, as given.
    pub config: serde_json::Value,
}

/// Seconds spent in each phase.
#[derive(Serialize, Default, Clone, Copy, Debug)]
pub struct Timings {
    pub setup_s: f64,
    pub run_s: f64,
    pub recovery_s: f64,
    /// Restart of every node, final reads and convergence sampling.
    pub final_s: f64,
    pub check_s: f64,
}

impl Results {
    /// Writes `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("results.json");
        let text = serde_json::to_string_pretty(self).context("serialize results")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))
    }
}

/// Counts of completed operations by outcome.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcomes {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    /// Invoked, never completed.
    pub pending: u64,
}

impl Outcomes {
    fn add(&mut self, kind: Option<EventKind>) {
        match kind {
            Some(EventKind::Ok) => self.ok += 1,
            Some(EventKind::Fail) => self.fail += 1,
            Some(EventKind::Info) => self.info += 1,
            _ => self.pending += 1,
        }
    }

    fn total(&self) -> u64 {
        self.ok + self.fail + self.info + self.pending
    }
}

/// Availability in one phase.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    pub ops: u64,
    pub ok: u64,
    /// `ok / ops`; `None` with no operations.
    pub fraction_ok: Option<f64>,
}

/// Latency of ok operations, in ms.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latency {
    fn of(mut ns: Vec<u64>) -> Latency {
        ns.sort_unstable();
        let at = |q: f64| -> Option<f64> {
            if ns.is_empty() {
                return None;
            }
            let i = ((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
            Some(ns[i] as f64 / 1e6)
        };
        Latency { count: ns.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: ns.last().map(|n| *n as f64 / 1e6) }
    }
}

/// How writes fared during one fault window and after its heal.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct HealRecovery {
    pub fault: String,
    /// From the fault's start to the completion of the first ok write or cas invoked inside the
    /// window (e.g. once a new leader took over); `None` if none succeeded while it lasted.
    pub first_ok_write_during_s: Option<f64>,
    /// When the fault was undone, s since the test started.
    pub healed_at_s: f64,
    /// From the heal to the completion of the first ok write or cas invoked after it; `None`
    /// if none succeeded before the next fault (or the end).
    pub first_ok_write_after_s: Option<f64>,
}

/// The figures of a run.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Figures {
    /// Operations by kind (`read`, `write`, `cas`, and `all`) and outcome.
    pub ops: BTreeMap<String, Outcomes>,
    /// Operations invoked while a fault was in force.
    pub faulted: Phase,
    /// Operations invoked while none was.
    pub healthy: Phase,
    /// Ok operations by kind, and `all`.
    pub latency: BTreeMap<String, Latency>,
    pub heal_to_first_write: Vec<HealRecovery>,
}

/// One operation, paired from the history (its invocation and completion by process).
pub(crate) struct Paired<'a> {
    pub(crate) op: &'a Op,
    pub(crate) invoke_ns: u64,
    /// The completion's kind and time; `None` if it never completed.
    pub(crate) outcome: Option<(EventKind, u64)>,
}

fn kind_name(op: &Op) -> &'static str {
    match op {
        Op::Read { .. } => "read",
        Op::Write { .. } => "write",
        Op::Cas { .. } => "cas",
        Op::Set { .. } => "set",
        Op::Delete { .. } => "delete",
    }
}

/// Every operation of `history`, in invocation order.
pub(crate) fn pair(history: &[Event]) -> Vec<Paired<'_>> {
    let mut ops: Vec<Paired<'_>> = Vec::new();
    let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
    for e in history {
        if e.kind == EventKind::Invoke {
            pending.insert(e.process, ops.len());
            ops.push(Paired { op: &e.op, invoke_ns: e.time_ns, outcome: None });
        } else if let Some(i) = pending.remove(&e.process) {
            ops[i].outcome = Some((e.kind, e.time_ns));
        }
    }
    ops
}

impl Figures {
    /// Computes the figures of `history` under the fault `windows`.
    pub fn compute(history: &[Event], windows: &[FaultWindow]) -> Figures {
        let ops = pair(history);
        let mut counts: BTreeMap<String, Outcomes> = BTreeMap::new();
        let (mut faulted, mut healthy) = (Phase::default(), Phase::default());
        let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for p in &ops {
            let kind = p.outcome.map(|(k, _)| k);
            for name in [kind_name(p.op), "all"] {
                counts.entry(name.to_string()).or_default().add(kind);
            }
            let phase = if windows.iter().any(|w| w.contains(p.invoke_ns)) { &mut faulted } else { &mut healthy };
            phase.ops += 1;
            if let Some((EventKind::Ok, done)) = p.outcome {
                phase.ok += 1;
                for name in [kind_name(p.op), "all"] {
                    latencies.entry(name.to_string()).or_default().push(done.saturating_sub(p.invoke_ns));
                }
            }
        }
        for phase in [&mut faulted, &mut healthy] {
            phase.fraction_ok = (phase.ops > 0).then(|| phase.ok as f64 / phase.ops as f64);
        }
        let latency = latencies.into_iter().map(|(k, v)| (k, Latency::of(v))).collect();

        // The completion of the first ok write invoked in [from, to) that completed before `by`.
        let first_ok_write = |from: u64, to: u64, by: u64| {
            ops.iter()
                .filter(|p| !matches!(p.op, Op::Read { .. }) && p.invoke_ns >= from && p.invoke_ns < to)
                .filter_map(|p| match p.outcome {
                    Some((EventKind::Ok, done)) if done < by => Some(done),
                    _ => None,
                })
                .min()
        };
        let mut heal_to_first_write = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let Some(healed) = w.end_ns else { continue };
            let next_fault = windows.get(i + 1).map_or(u64::MAX, |n| n.start_ns);
            let during = first_ok_write(w.start_ns, healed, healed);
            let after = first_ok_write(healed, next_fault, u64::MAX);
            heal_to_first_write.push(HealRecovery {
                fault: w.fault.clone(),
                first_ok_write_during_s: during.map(|done| done.saturating_sub(w.start_ns) as f64 / 1e9),
                healed_at_s: healed as f64 / 1e9,
                first_ok_write_after_s: after.map(|done| done.saturating_sub(healed) as f64 / 1e9),
            });
        }
        Figures { ops: counts, faulted, healthy, latency, heal_to_first_write }
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(all) = self.ops.get("all") {
            out.push_str(&format!(
                "ops: {} (ok {}, fail {}, info {}, pending {})\n",
                all.total(),
                all.ok,
                all.fail,
                all.info,
                all.pending
            ));
        }
        let pct = |p: &Phase| p.fraction_ok.map_or("-".to_string(), |f| format!("{:.1}%", f * 100.0));
        out.push_str(&format!(
            "ok while faulted: {} of {}; while healthy: {} of {}\n",
            pct(&self.faulted),
            self.faulted.ops,
            pct(&self.healthy),
            self.healthy.ops
        ));
        if let Some(l) = self.latency.get("all") {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |ms| format!("{ms:.1}ms"));
            out.push_str(&format!("latency of ok ops: p50 {} p99 {} max {}\n", f(l.p50_ms), f(l.p99_ms), f(l.max_ms)));
        }
        let seconds = |s: Option<f64>| s.map_or("none".to_string(), |s| format!("{s:.2}s"));
        let during: Vec<String> = self.heal_to_first_write.iter().map(|h| seconds(h.first_ok_write_during_s)).collect();
        let after: Vec<String> = self.heal_to_first_write.iter().map(|h| seconds(h.first_ok_write_after_s)).collect();
        if !after.is_empty() {
            out.push_str(&format!("fault to first ok write in it: {}\n", during.join(", ")));
            out.push_str(&format!("heal to first ok write: {}\n", after.join(", ")));
        }
        out
    }
}

/// Serializes a [`Duration`](std::time::Duration) the way the flags spell it (`1s 500ms`), for
/// the `config` in `results.json`.
pub(crate) fn human_duration<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// [`human_duration`] for an optional duration (`null` when absent).
pub(crate) fn human_duration_opt<S: serde::Serializer>(
    d: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => human_duration(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ReadLevel;
    use crate::nemesis::NemesisKind;

    fn ev(index: u64, ms: u64, process: u64, kind: EventKind, op: Op) -> Event {
        Event { index, time_ns: ms * 1_000_000, process, kind, op, error: None }
    }

    #[test]
    fn figures_split_phases_and_measure_recovery() {
        let w = |v: &str| Op::Write { key: "k".into(), value: v.into() };
        let r = |v: Option<&str>| Op::Read {
            key: "k".into(),
            level: ReadLevel::Linearizable,
            value: v.map(Into::into),
            after: None,
        };
        let history = vec![
            ev(0, 0, 1, EventKind::Invoke, w("a")),
            ev(1, 10, 1, EventKind::Ok, w("a")), // healthy, 10 ms
            ev(2, 100, 2, EventKind::Invoke, r(None)),
            ev(3, 400, 2, EventKind::Info, r(None)), // faulted
            ev(4, 150, 1, EventKind::Invoke, w("b")),
            ev(5, 160, 1, EventKind::Fail, w("b")), // faulted
            ev(6, 310, 1, EventKind::Invoke, w("c")),
            ev(7, 340, 1, EventKind::Ok, w("c")), // healthy, first write after heal: 40 ms
            ev(8, 320, 3, EventKind::Invoke, r(None)),
            ev(9, 330, 3, EventKind::Ok, r(Some("a"))),
            ev(10, 350, 4, EventKind::Invoke, w("d")), // never completes
            ev(11, 200, 5, EventKind::Invoke, w("e")),
            ev(12, 230, 5, EventKind::Ok, w("e")), // faulted, yet ok: 180 ms into the window
        ];
        let windows = vec![FaultWindow::plain(NemesisKind::Pause, "pause [1]", vec![1], 50_000_000, Some(300_000_000))];
        let f = Figures::compute(&history, &windows);
        assert_eq!(f.ops["all"], Outcomes { ok: 4, fail: 1, info: 1, pending: 1 });
        assert_eq!(f.ops["write"], Outcomes { ok: 3, fail: 1, info: 0, pending: 1 });
        assert_eq!(f.faulted, Phase { ops: 3, ok: 1, fraction_ok: Some(1.0 / 3.0) });
        assert_eq!(f.healthy, Phase { ops: 4, ok: 3, fraction_ok: Some(0.75) });
        assert_eq!(f.latency["all"].count, 4);
        assert_eq!(f.latency["all"].p50_ms, Some(10.0));
        assert_eq!(f.latency["all"].max_ms, Some(30.0));
        assert_eq!(f.heal_to_first_write.len(), 1);
        let after = f.heal_to_first_write[0].first_ok_write_after_s.unwrap();
        assert!((after - 0.040).abs() < 1e-9, "{after}");
        let during = f.heal_to_first_write[0].first_ok_write_during_s.unwrap();
        assert!((during - 0.180).abs() < 1e-9, "{during}");
        assert!(f.summary().contains("ops: 7"), "{}", f.summary());
        assert!(f.summary().contains("fault to first ok write in it: 0.18s"), "{}", f.summary());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).map(|ms| ms * 1_000_000).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(Latency::of(vec![]), Latency::default());
    }
}
