//! Checkers: each judges a recorded history on its own, without the cluster (one file each,
//! each testable on hand-written histories).
//!
//! [`operation`] pairs invocations with completions; [`linearizable`] checks each key as a
//! linearizable register (writes, compare-and-sets, linearizable reads), or, in the cache
//! workload, as a register whose value may expire (sets with a TTL, deletes); [`staleness`] checks
//! bounded and stale reads against what was acknowledged before them; [`read_your_writes`] checks
//! reads pinned with `min_version` to the reader's own acknowledged write; [`durability`] checks the
//! final reads taken after every node was restarted against the acknowledged writes. [`ttl`]
//! holds the expiry rules those checkers share (when an entry may disappear, given a slack for clock
//! skew) and the early-expiry anomaly. [`check_all`] runs them all and combines their verdicts
//! into the [`CheckReport`] that goes into `results.json`. [`convergence`] judges state hashes the runner samples from the nodes at the
//! end (not the history); [`CheckReport::add_convergence`] folds its verdict in. Under
//! `--overload`, [`liveness`] judges the leadership samples and commit times the runner records
//! (the leader stays unless a fault deposes it, writes keep committing);
//! [`CheckReport::add_liveness`] folds that in.
//!
//! Invariants every checker keeps:
//! * it trusts only the history: values clients sent and received, and times from the one test
//!   clock. Nothing the system reports about itself (versions, bounds, node ids) is evidence;
//! * `Fail` means the operation did not happen, `Info` (or no completion) that it may have
//!   happened at any time after its invocation, or never; equal timestamps count as concurrent;
//! * `valid` is said only when the check was exhaustive; a search that ran out of budget says
//!   `unknown`, and an anomaly is reported with the operations that show it;
//! * a history that breaks its own format is a harness bug: it makes the verdict `unknown`
//!   (exit 2), never `invalid`, and is listed apart from the anomalies.

pub mod convergence;
pub mod durability;
pub mod linearizable;
pub mod liveness;
pub mod operation;
pub mod read_your_writes;
pub mod staleness;
#[cfg(test)]
mod test_history;
pub mod ttl;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use self::convergence::{ConvergenceReport, Divergence};
use self::durability::LostWrite;
use self::linearizable::{LinearizabilityAnomaly, LinearizabilityResult};
use self::liveness::LivenessReport;
use self::operation::{HistoryError, Operation};
use self::read_your_writes::PinViolation;
use self::staleness::StaleRead;
use self::ttl::{EarlyExpiry, TtlSummary};
use crate::history::{Event, EventKind, Op, ReadLevel};

/// A checker's verdict. Serializes as `true`, `false` or `"unknown"` (results.json's `valid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Valid,
    Invalid,
    Unknown,
}

impl Verdict {
    /// Both verdicts together: invalid if either is, else unknown if either is, else valid.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            _ => Verdict::Valid,
        }
    }

    /// The harness's exit code: 0 valid, 1 invalid, 2 unknown (as for a harness error).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        })
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Verdict::Valid => s.serialize_bool(true),
            Verdict::Invalid => s.serialize_bool(false),
            Verdict::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Verdict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bool(bool),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Bool(true) => Ok(Verdict::Valid),
            Repr::Bool(false) => Ok(Verdict::Invalid),
            Repr::Str(s) if s == "unknown" => Ok(Verdict::Unknown),
            Repr::Str(s) => Err(serde::de::Error::custom(format!("expected true, false or \"unknown\", got {s:?}"))),
        }
    }
}

/// Everything the checkers found, as it goes into `results.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// All checkers together (see [`Verdict::and`]); `unknown` if the history is malformed.
    pub valid: Verdict,
    pub linearizable: LinearizableSummary,
    pub staleness: StalenessSummary,
    /// Reads pinned with `min_version` to the reader's own acknowledged write.
    #[serde(default)]
    pub read_your_writes: ReadYourWritesSummary,
    pub durability: DurabilitySummary,
    /// The expiry rules: the slack allowed, how often reads saw an entry expire, early expiries.
    #[serde(default)]
    pub ttl: TtlSummary,
    /// The replicas' state hashes at the end; `None` if they were not sampled.
    #[serde(default)]
    pub convergence: Option<ConvergenceReport>,
    /// Leadership and commit progress under `--overload`; `None` without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<LivenessReport>,
    /// Every anomaly: linearizability ones first (one per invalid key; an early expiry when the
    /// simplest account of the key's violation is one), then stale reads and early expiries
    /// among bounded and stale reads in key and invocation order, then read-your-writes
    /// violations (in key and invocation order), then lost writes, then a divergence.
    pub anomalies: Vec<Anomaly>,
    pub op_counts: OpCounts,
    /// Harness bugs: places where the history breaks its own format.
    pub history_errors: Vec<HistoryError>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LinearizableSummary {
    pub valid: Verdict,
    pub keys: usize,
    /// Operations judged over all keys.
    pub ops: usize,
    /// Keys whose search ran out of budget.
    pub unknown_keys: Vec<String>,
    pub invalid_keys: Vec<String>,
    /// The slowest key's search, in ms.
    pub slowest_key_ms: f64,
    pub elapsed_ms: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StalenessSummary {
    pub valid: Verdict,
    /// `Ok` bounded and stale reads judged.
    pub reads: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReadYourWritesSummary {
    pub valid: Verdict,
    /// `Ok` reads pinned to an acknowledged write, judged (at any level).
    pub pinned_reads: usize,
    /// How many of them returned something older than their pin.
    pub violations: usize,
}

impl Default for ReadYourWritesSummary {
    /// What a history without pinned reads (e.g. one recorded before they existed) gives.
    fn default() -> Self {
        ReadYourWritesSummary { valid: Verdict::Valid, pinned_reads: 0, violations: 0 }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DurabilitySummary {
    pub valid: Verdict,
    /// Whether the history has final reads (taken after every node was restarted) at all.
    pub final_reads: bool,
    /// Keys whose final read answered, judged.
    pub keys_checked: usize,
    /// Keys no final read answered for (they make the verdict `unknown`).
    pub unread_keys: Vec<String>,
}

/// One anomaly, tagged (`checker`) with the checker that found it, or `early-expiry` for an
/// entry that disappeared before its TTL can have passed (found by the linearizability or the
/// staleness checker: its `found_by` says which).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "checker", rename_all = "lowercase")]
pub enum Anomaly {
    Linearizable(Box<LinearizabilityAnomaly>),
    Staleness(Box<StaleRead>),
    /// A read pinned with `min_version` to its worker's own write returned something older.
    #[serde(rename = "read-your-writes")]
    ReadYourWrites(Box<PinViolation>),
    Durability(Box<LostWrite>),
    Convergence(Box<Divergence>),
    /// Under `--overload`: the leader changed, or writes stopped committing, with no fault in force.
    Liveness(Box<LivenessFinding>),
    #[serde(rename = "early-expiry")]
    EarlyExpiry(Box<EarlyExpiry>),
}

/// What the liveness checker found (its report has the details).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LivenessFinding {
    pub explanation: String,
}

/// How many operations completed each way.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub ok: usize,
    pub fail: usize,
    /// Completed as indeterminate.
    pub info: usize,
    /// Never completed (as indeterminate as `info`).
    pub pending: usize,
}

impl OutcomeCounts {
    fn count(&mut self, op: &Operation) {
        match (op.outcome, op.complete_index) {
            (EventKind::Ok, _) => self.ok += 1,
            (EventKind::Fail, _) => self.fail += 1,
            (_, Some(_)) => self.info += 1,
            (_, None) => self.pending += 1,
        }
    }
}

/// Operations by function and outcome.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub total: OutcomeCounts,
    pub read: OutcomeCounts,
    pub write: OutcomeCounts,
    pub cas: OutcomeCounts,
    #[serde(default)]
    pub set: OutcomeCounts,
    #[serde(default)]
    pub delete: OutcomeCounts,
}

impl OpCounts {
    pub fn of(ops: &[Operation]) -> Self {
        let mut counts = OpCounts::default();
        for op in ops {
            counts.total.count(op);
            match op.op {
                Op::Read { .. } => counts.read.count(op),
                Op::Write { .. } => counts.write.count(op),
                Op::Cas { .. } => counts.cas.count(op),
                Op::Set { .. } => counts.set.count(op),
                Op::Delete { .. } => counts.delete.count(op),
            }
        }
        counts
    }
}

/// What the checkers are given besides the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Wall-clock time the linearizability search may take; keys not decided by then are
    /// `unknown`. The other checkers are linear-ish and unbounded.
    pub budget: Duration,
    /// The largest spread of clock offsets between nodes (the most one node's clock may be
    /// ahead of another's, in ms) that the test may have applied: 0 without a clock nemesis.
    /// An entry may disappear this much before its TTL by the harness's clock without being an
    /// early expiry; the TTL slack is this plus [`ttl::TIMESTAMP_TOLERANCE_MS`] (see [`ttl`]).
    pub clock_skew_ms: u64,
    /// Judge every read as a linearizable read, whatever level it was issued at (the runner's
    /// `--model linearizable`): is the history linearizable as a whole? A read issued below
    /// linearizable that found a key absent before the TTL of a set it missed is then reported as
    /// a stale read, not as an early expiry: it never promised to see the set.
    pub reads_as_linearizable: bool,
}

impl CheckConfig {
    /// No clock skew.
    pub fn new(budget: Duration) -> CheckConfig {
        CheckConfig { budget, clock_skew_ms: 0, reads_as_linearizable: false }
    }

    /// How long before its TTL (by the harness's clock) an entry may disappear: the clock skew
    /// spread plus the timestamp tolerance.
    pub fn slack_ms(&self) -> u64 {
        ttl::slack_ms(self.clock_skew_ms)
    }
}

/// `history` with every read relabeled as linearizable (see
/// [`CheckConfig::reads_as_linearizable`]).
pub fn reads_as_linearizable(history: &[Event]) -> Vec<Event> {
    let mut events = history.to_vec();
    for e in &mut events {
        if let Op::Read { level, .. } = &mut e.op {
            *level = ReadLevel::Linearizable;
        }
    }
    events
}

/// Runs every checker on `history`.
pub fn check_all(history: &[Event], config: &CheckConfig) -> CheckReport {
    // Reads issued below linearizable, by invocation index, when they are judged as linearizable.
    let mut weaker: HashMap<u64, ReadLevel> = HashMap::new();
    let relabeled;
    let history = if config.reads_as_linearizable {
        for e in history {
            match e.op {
                Op::Read { level, .. } if e.kind == EventKind::Invoke && level != ReadLevel::Linearizable => {
                    weaker.insert(e.index, level);
                }
                _ => {}
            }
        }
        relabeled = reads_as_linearizable(history);
        &relabeled[..]
    } else {
        history
    };
    let (ops, history_errors) = operation::pair(history);
    let slack_ms = config.slack_ms();

    let started = Instant::now();
    let lin = linearizable::check(&ops, config.budget, slack_ms);
    let elapsed_ms = started.elapsed().as_micros() as f64 / 1e3;
    let stale = staleness::check(&ops, slack_ms);
    let ryw = read_your_writes::check(&ops, slack_ms);
    let durable = durability::check(&ops, slack_ms);

    let mut anomalies = Vec::new();
    let mut unknown_keys = Vec::new();
    let mut invalid_keys = Vec::new();
    for k in &lin.keys {
        match &k.result {
            LinearizabilityResult::Valid => {}
            LinearizabilityResult::Invalid { anomaly, .. } => {
                invalid_keys.push(k.key.clone());
                anomalies.push(match &anomaly.early_expiry {
                    Some(early) => match weaker.get(&early.read.invoke_index) {
                        Some(level) => Anomaly::Linearizable(Box::new(missed_by_a_weaker_read(anomaly, early, *level))),
                        None => Anomaly::EarlyExpiry(early.clone()),
                    },
                    None => Anomaly::Linearizable(anomaly.clone()),
                });
            }
            LinearizabilityResult::Unknown { .. } => unknown_keys.push(k.key.clone()),
        }
    }
    anomalies.extend(stale.violations.iter().cloned().map(|v| Anomaly::Staleness(Box::new(v))));
    anomalies.extend(stale.early_expiries.iter().cloned().map(|v| Anomaly::EarlyExpiry(Box::new(v))));
    anomalies.extend(ryw.violations.iter().cloned().map(|v| Anomaly::ReadYourWrites(Box::new(v))));
    anomalies.extend(durable.lost.iter().cloned().map(|v| Anomaly::Durability(Box::new(v))));

    let linearizable = LinearizableSummary {
        valid: lin.result.verdict(),
        keys: lin.keys.len(),
        ops: lin.keys.iter().map(|k| k.ops).sum(),
        unknown_keys,
        invalid_keys,
        slowest_key_ms: lin.keys.iter().map(|k| k.elapsed_us).max().unwrap_or(0) as f64 / 1e3,
        elapsed_ms,
    };
    let staleness = StalenessSummary { valid: stale.valid, reads: stale.reads_checked };
    let read_your_writes =
        ReadYourWritesSummary { valid: ryw.valid, pinned_reads: ryw.pinned_reads, violations: ryw.violations.len() };

    let durability = DurabilitySummary {
        valid: durable.valid,
        final_reads: durable.final_reads,
        keys_checked: durable.keys_checked,
        unread_keys: durable.unread_keys,
    };

    let mut ttl = ttl::summarize(&ops, slack_ms);
    ttl.early_expiries = anomalies.iter().filter(|a| matches!(a, Anomaly::EarlyExpiry(_))).count();

    let mut valid = linearizable.valid.and(staleness.valid).and(read_your_writes.valid).and(durability.valid);
    if !history_errors.is_empty() {
        // A broken record proves nothing either way about the system.
        valid = Verdict::Unknown;
    }
    CheckReport {
        valid,
        linearizable,
        staleness,
        read_your_writes,
        durability,
        ttl,
        convergence: None,
        liveness: None,
        anomalies,
        op_counts: OpCounts::of(&ops),
        history_errors,
    }
}

/// A read issued at `level` (below linearizable) and judged as linearizable found a key absent
/// before a set's TTL can have passed: it missed the set, a stale read, rather than an early
/// expiry (a stale read never promised to see the set).
fn missed_by_a_weaker_read(
    anomaly: &LinearizabilityAnomaly,
    early: &EarlyExpiry,
    level: ReadLevel,
) -> LinearizabilityAnomaly {
    let level = match level {
        ReadLevel::Bounded(ms) => format!("bounded({ms}ms)"),
        _ => "stale".to_string(),
    };
    let mut anomaly = anomaly.clone();
    anomaly.early_expiry = None;
    anomaly.explanation = format!(
        "{read} was issued as a {level} read (judged here as linearizable) and found {key} absent, but {set} was \
         acknowledged before it began, cannot have expired by its completion (TTL {ttl}ms, slack {slack}ms) and no \
         delete can have come between: a stale read",
        read = early.read,
        key = early.key,
        set = early.set,
        ttl = early.ttl_ms,
        slack = early.slack_ms,
    );
    anomaly
}

impl CheckReport {
    /// Adds the convergence check's result and folds its verdict into [`CheckReport::valid`]
    /// (a divergence also goes into the anomalies).
    pub fn add_convergence(&mut self, report: ConvergenceReport) {
        if let Some(d) = &report.divergence {
            self.anomalies.push(Anomaly::Convergence(Box::new(d.clone())));
        }
        self.valid = self.valid.and(report.valid);
        self.convergence = Some(report);
    }

    /// Folds in the overload run's liveness verdict ([`liveness::judge`]).
    pub fn add_liveness(&mut self, report: LivenessReport) {
        if report.valid == Verdict::Invalid {
            self.anomalies
                .push(Anomaly::Liveness(Box::new(LivenessFinding { explanation: report.explanation.clone() })));
        }
        self.valid = self.valid.and(report.valid);
        self.liveness = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::test_history::H;
    use super::*;
    use crate::history::Pin;

    #[test]
    fn verdict_serializes_as_results_json_expects() {
        let json = serde_json::to_string(&[Verdict::Valid, Verdict::Invalid, Verdict::Unknown]).unwrap();
        assert_eq!(json, r#"[true,false,"unknown"]"#);
        let back: Vec<Verdict> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![Verdict::Valid, Verdict::Invalid, Verdict::Unknown]);
        assert!(serde_json::from_str::<Verdict>(r#""maybe""#).is_err());
    }

    #[test]
    fn verdicts_combine_invalid_over_unknown_over_valid() {
        use Verdict::*;
        assert_eq!(Valid.and(Valid), Valid);
        assert_eq!(Valid.and(Unknown), Unknown);
        assert_eq!(Unknown.and(Invalid), Invalid);
        assert_eq!(Invalid.and(Valid), Invalid);
        assert_eq!([Valid, Invalid, Unknown].map(Verdict::exit_code), [0, 1, 2]);
    }

    #[test]
    fn check_all_combines_checkers_and_counts_ops() {
        let mut h = H::new();
        h.w(1, 0, 10, "a", "a1");
        h.r(2, 20, 30, "a", Some("a1"));
        h.call(3, 0, 5, EventKind::Fail, H::write("b", "b0"));
        h.w(1, 40, 50, "b", "b1");
        h.w(1, 60, 70, "b", "b2");
        h.call(2, 300, 310, EventKind::Ok, H::read_at("b", ReadLevel::Bounded(100), Some("b1")));
        h.call(3, 320, 330, EventKind::Info, H::cas("b", Some("b2"), "b3"));
        h.pending(4, 400, H::read("a"));
        let report = check_all(&h.history(), &CheckConfig::new(Duration::from_secs(5)));
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.linearizable.valid, Verdict::Valid);
        assert_eq!(report.staleness.valid, Verdict::Invalid);
        assert_eq!(report.anomalies.len(), 1);
        assert_eq!(report.linearizable.keys, 2);
        assert_eq!(report.op_counts.total, OutcomeCounts { ok: 5, fail: 1, info: 1, pending: 1 });
        assert_eq!(report.op_counts.write, OutcomeCounts { ok: 3, fail: 1, info: 0, pending: 0 });
        assert_eq!(report.op_counts.cas.info, 1);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["valid"], serde_json::json!(false));
        assert_eq!(json["anomalies"][0]["checker"], "staleness");
        assert_eq!(json["anomalies"][0]["rule"], "stale");
        let back: CheckReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn check_all_reports_read_your_writes_violations_at_every_level() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v0");
        h.w(2, 20, 30, "k", "v1");
        // A linearizable read pinned to v1 that returns v0: the linearizability checker catches it
        // as before, and the pin check too.
        h.call(2, 40, 50, EventKind::Ok, H::pinned("k", ReadLevel::Linearizable, Pin::Value("v1".into()), Some("v0")));
        // A stale read may lag, but not behind its own pin.
        h.call(2, 60, 70, EventKind::Ok, H::pinned("k", ReadLevel::Stale, Pin::Value("v1".into()), Some("v0")));
        h.call(2, 80, 90, EventKind::Ok, H::pinned("k", ReadLevel::Stale, Pin::Value("v1".into()), Some("v1")));
        let report = check_all(&h.history(), &CheckConfig::new(Duration::from_secs(5)));
        assert_eq!(report.valid, Verdict::Invalid, "{report:#?}");
        assert_eq!(report.linearizable.valid, Verdict::Invalid);
        assert_eq!(report.staleness.valid, Verdict::Valid);
        assert_eq!(
            report.read_your_writes,
            ReadYourWritesSummary { valid: Verdict::Invalid, pinned_reads: 3, violations: 2 }
        );
        let json = serde_json::to_value(&report).unwrap();
        let ryw: Vec<&serde_json::Value> =
            json["anomalies"].as_array().unwrap().iter().filter(|a| a["checker"] == "read-your-writes").collect();
        assert_eq!(ryw.len(), 2, "{json:#}");
        assert_eq!(ryw[0]["rule"], "older-value");
        assert_eq!(ryw[0]["read"]["op"]["after"], serde_json::json!({"value": "v1"}));
        assert_eq!(json["read_your_writes"]["pinned_reads"], 3);
        let back: CheckReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);

        // Without pins (or in an old results.json) the summary is empty and valid.
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v0");
        h.call(2, 20, 30, EventKind::Ok, H::read_at("k", ReadLevel::Stale, Some("v0")));
        let report = check_all(&h.history(), &CheckConfig::new(Duration::from_secs(5)));
        assert_eq!(report.valid, Verdict::Valid, "{report:#?}");
        assert_eq!(report.read_your_writes, ReadYourWritesSummary::default());
        let mut json = serde_json::to_value(&report).unwrap();
        json.as_object_mut().unwrap().remove("read_your_writes");
        assert_eq!(serde_json::from_value::<CheckReport>(json).unwrap(), report);
    }

    #[test]
    fn malformed_history_is_unknown_not_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.r(2, 20, 30, "k", Some("nobody wrote this"));
        let mut events = h.history();
        events.push(Event { index: 4, time_ns: 40, ..events[1].clone() }); // a second completion
        let report = check_all(&events, &CheckConfig::new(Duration::from_secs(5)));
        assert_eq!(report.linearizable.valid, Verdict::Invalid);
        assert_eq!(report.valid, Verdict::Unknown, "{report:#?}");
        assert_eq!(report.history_errors.len(), 2, "{:?}", report.history_errors);
    }
}
