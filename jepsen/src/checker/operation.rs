//! Completed operations: each invocation paired with its completion, the unit every checker reasons
//! about.
//!
//! Pairing is by process: a process has at most one operation in flight, so its next completion
//! belongs to its pending invocation. An invocation with no completion by the end of the history is
//! indeterminate, exactly like an `Info` completion that came at +infinity.
//!
//! A history that breaks the format's invariants (a completion with nothing pending, two
//! invocations in flight on one process, a completion naming another operation, time going
//! backwards) is a harness bug, not a system failure: it is reported as a [`HistoryError`] and the
//! offending event is skipped, so that checkers never judge the system on a broken record.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventKind, Op, Process, ReadLevel};

/// One operation: its invocation, and its completion if the history has one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub process: Process,
    /// For an `Ok` completion, the completion's op (a read carries its value); otherwise the
    /// invocation's.
    pub op: Op,
    /// `Ok`, `Fail` or `Info`. An invocation never completed is `Info` with no completion.
    pub outcome: EventKind,
    pub invoke_index: u64,
    pub invoke_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_ns: Option<u64>,
}

impl Operation {
    /// Completion time, or `u64::MAX` if the operation may take effect at any time after its
    /// invocation (`Info`, or never completed). A `Fail` has a real completion time, but checkers
    /// drop failed operations anyway.
    pub fn effective_complete_ns(&self) -> u64 {
        match self.outcome {
            EventKind::Info => u64::MAX,
            _ => self.complete_ns.unwrap_or(u64::MAX),
        }
    }

    /// The value this operation writes, if it is a write, a compare-and-set or a set.
    pub fn written_value(&self) -> Option<&str> {
        match &self.op {
            Op::Write { value, .. } | Op::Set { value, .. } => Some(value),
            Op::Cas { to, .. } => Some(to),
            Op::Read { .. } | Op::Delete { .. } => None,
        }
    }

    /// The TTL of a set, in ms; `None` for a set without one and for every other operation.
    pub fn ttl_ms(&self) -> Option<u64> {
        match &self.op {
            Op::Set { ttl_ms, .. } => *ttl_ms,
            _ => None,
        }
    }

    /// True if this operation changes the key when it takes effect: it writes a value, or it
    /// deletes.
    pub fn is_mutation(&self) -> bool {
        self.written_value().is_some() || matches!(self.op, Op::Delete { .. })
    }

    /// True if this operation certainly happened and wrote: an `Ok` write, compare-and-set or set.
    pub fn is_acknowledged_write(&self) -> bool {
        self.outcome == EventKind::Ok && self.written_value().is_some()
    }

    /// True if this operation certainly happened and changed the key: an acknowledged write or
    /// an `Ok` delete.
    pub fn is_acknowledged_mutation(&self) -> bool {
        self.outcome == EventKind::Ok && self.is_mutation()
    }

    /// True if `self` certainly completed before `other` was invoked (strictly: equal timestamps
    /// count as concurrent, which can only make a checker more lenient).
    pub fn precedes(&self, other: &Operation) -> bool {
        self.outcome != EventKind::Info && self.complete_ns.is_some_and(|c| c < other.invoke_ns)
    }
}

/// `12.345ms`: history times are nanoseconds since the test started; people read milliseconds.
pub(crate) fn ms(ns: u64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

/// Renders a value as the register would hold it: `"v"`, or `absent`.
pub(crate) fn value_str(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    }
}

impl fmt::Display for Operation {
    /// `p3 write k="v" ok [12.000ms, 14.500ms] (events 5-9)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} ", self.process)?;
        match &self.op {
            Op::Read { key, level, value, after } => {
                let level = match level {
                    ReadLevel::Linearizable => "linearizable".to_string(),
                    ReadLevel::Bounded(d) => format!("bounded({d}ms)"),
                    ReadLevel::Stale => "stale".to_string(),
                };
                write!(f, "{level} read {key}")?;
                if let Some(pin) = after {
                    write!(f, " (min_version of {pin})")?;
                }
                if self.outcome == EventKind::Ok {
                    write!(f, " -> {}", value_str(value.as_deref()))?;
                }
            }
            Op::Write { key, value } => write!(f, "write {key}={value:?}")?,
            Op::Cas { key, from, to } => write!(f, "cas {key} {}->{to:?}", value_str(from.as_deref()))?,
            Op::Set { key, value, ttl_ms: Some(ttl) } => write!(f, "set {key}={value:?} ttl {ttl}ms")?,
            Op::Set { key, value, ttl_ms: None } => write!(f, "set {key}={value:?} no ttl")?,
            Op::Delete { key } => write!(f, "delete {key}")?,
        }
        let outcome = match (self.outcome, self.complete_index) {
            (EventKind::Ok, _) => "ok",
            (EventKind::Fail, _) => "fail",
            (_, Some(_)) => "info",
            (_, None) => "never completed",
        };
        write!(f, " {outcome} [{}, ", ms(self.invoke_ns))?;
        match (self.outcome, self.complete_ns) {
            (EventKind::Info, _) | (_, None) => write!(f, "?]")?,
            (_, Some(c)) => write!(f, "{}]", ms(c))?,
        }
        match self.complete_index {
            Some(c) => write!(f, " (events {}-{c})", self.invoke_index),
            None => write!(f, " (event {})", self.invoke_index),
        }
    }
}

/// A place where the history breaks its own format: a harness bug.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    /// Index of the offending event.
    pub index: u64,
    pub message: String,
}

/// `ops` grouped by key, in key order, each group in the order of `ops`: every checker judges
/// one key at a time.
pub fn by_key(ops: &[Operation]) -> std::collections::BTreeMap<&str, Vec<&Operation>> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&Operation>> = std::collections::BTreeMap::new();
    for op in ops {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    by_key
}

/// Pairs every invocation with its completion. Returns the operations in invocation order and
/// the history's format errors (offending events are skipped).
pub fn pair(history: &[Event]) -> (Vec<Operation>, Vec<HistoryError>) {
    let mut ops: Vec<Operation> = Vec::new();
    let mut errors = Vec::new();
    // process -> position in `ops` of its pending invocation
    let mut pending: HashMap<Process, usize> = HashMap::new();
    let mut last_ns = 0;
    for e in history {
        if e.time_ns < last_ns {
            errors.push(HistoryError {
                index: e.index,
                message: format!("time goes backwards: {} after {}", e.time_ns, last_ns),
            });
        }
        last_ns = last_ns.max(e.time_ns);
        match e.kind {
            EventKind::Invoke => {
                if let Some(&prev) = pending.get(&e.process) {
                    errors.push(HistoryError {
                        index: e.index,
                        message: format!(
                            "process {} invokes while its invocation at event {} is still pending",
                            e.process, ops[prev].invoke_index
                        ),
                    });
                    continue;
                }
                pending.insert(e.process, ops.len());
                ops.push(Operation {
                    process: e.process,
                    op: e.op.clone(),
                    outcome: EventKind::Info,
                    invoke_index: e.index,
                    invoke_ns: e.time_ns,
                    complete_index: None,
                    complete_ns: None,
                });
            }
            kind => {
                let Some(at) = pending.remove(&e.process) else {
                    errors.push(HistoryError {
                        index: e.index,
                        message: format!("completion with no pending invocation on process {}", e.process),
                    });
                    continue;
                };
                let op = &mut ops[at];
                if !same_operation(&op.op, &e.op) {
                    errors.push(HistoryError {
                        index: e.index,
                        message: format!(
                            "completion {:?} does not match its invocation {:?} (event {})",
                            e.op, op.op, op.invoke_index
                        ),
                    });
                }
                op.outcome = kind;
                op.complete_index = Some(e.index);
                op.complete_ns = Some(e.time_ns);
                if kind == EventKind::Ok {
                    op.op = e.op.clone();
                }
            }
        }
    }
    (ops, errors)
}

/// Same function on the same key with the same arguments (a read's result may differ).
fn same_operation(invoke: &Op, complete: &Op) -> bool {
    match (invoke, complete) {
        (Op::Read { key: k1, level: l1, after: a1, .. }, Op::Read { key: k2, level: l2, after: a2, .. }) => {
            k1 == k2 && l1 == l2 && a1 == a2
        }
        (a @ Op::Write { .. }, b @ Op::Write { .. })
        | (a @ Op::Cas { .. }, b @ Op::Cas { .. })
        | (a @ Op::Set { .. }, b @ Op::Set { .. })
        | (a @ Op::Delete { .. }, b @ Op::Delete { .. }) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_history::H;

    #[test]
    fn pairs_by_process_and_keeps_pending_as_info() {
        let mut h = H::new();
        h.invoke(1, 0, H::write("k", "a"));
        h.invoke(2, 1, H::read("k"));
        h.ok(2, 2, H::read_ok("k", Some("a")));
        h.ok(1, 3, H::write("k", "a"));
        h.invoke(3, 4, H::write("k", "b"));
        let (ops, errors) = pair(&h.events);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[0].outcome, ops[0].complete_index), (EventKind::Ok, Some(3)));
        assert_eq!(ops[1].op, H::read_ok("k", Some("a")));
        assert_eq!((ops[2].outcome, ops[2].complete_ns), (EventKind::Info, None));
        assert_eq!(ops[2].effective_complete_ns(), u64::MAX);
    }

    #[test]
    fn format_errors_are_reported_not_judged() {
        let mut h = H::new();
        h.ok(1, 0, H::write("k", "a"));
        h.invoke(2, 1, H::write("k", "b"));
        h.invoke(2, 2, H::write("k", "c"));
        h.ok(2, 3, H::write("k", "x"));
        let (ops, errors) = pair(&h.events);
        assert_eq!(ops.len(), 1);
        let at: Vec<u64> = errors.iter().map(|e| e.index).collect();
        assert_eq!(at, vec![0, 2, 3], "{errors:?}");
    }
}
