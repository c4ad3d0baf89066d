//! The history of a test: every operation's invocation and completion, with timestamps from one
//! monotonic clock, as Jepsen records them. Written as JSON lines (`history.jsonl`), one
//! [`Event`] per line, in the order they happened.
//!
//! Invariants: a process (one client worker) has at most one operation in flight, so its events
//! alternate invoke, completion; a completion repeats its invocation's operation with the result
//! filled in; `time_ns` never decreases along the history.
//!
//! Completions are classified as Jepsen does: `Ok` (it happened, with this result), `Fail` (it
//! certainly did not happen), `Info` (unknown: it may have happened, at any time after its
//! invocation, or never). A timeout or a lost connection is `Info`, never `Fail`.

use serde::{Deserialize, Serialize};

/// A client worker. Each has one operation in flight at a time.
pub type Process = u64;

/// One line of the history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the test started (one monotonic clock for the whole test).
    pub time_ns: u64,
    pub process: Process,
    pub kind: EventKind,
    pub op: Op,
    /// For completions: why it failed or is unknown, for people reading the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Invocation or one of the three kinds of completion.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// Read consistency of a read operation, as the workload asked for it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadLevel {
    #[default]
    Linearizable,
    /// Bounded staleness, in ms.
    Bounded(u64),
    Stale,
}

/// An operation on one key: the register workload's read, write and cas, the cache workload's
/// read, set (with an optional TTL) and delete. Values are unique strings per write, so a
/// read's value names the write it saw.
///
/// One JSON object per operation, tagged by `f`: `{"f":"write","key":"k1","value":"p3-17"}`,
/// `{"f":"set","key":"k1","value":"p3-18","ttl_ms":500}`, `{"f":"delete","key":"k1"}`. A set
/// without a TTL has no `ttl_ms`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Op {
    /// Read `key`. On an `Ok` completion `value` is what was read (`None`: the key was absent);
    /// on an invocation or a `Fail`/`Info` completion it means nothing and is `None`. `after`
    /// (on the invocation and the completion alike) names the same worker's acknowledged write
    /// whose version the read carried as `min_version` (read-your-writes); absent from the JSON
    /// when the read was not pinned.
    Read {
        key: String,
        level: ReadLevel,
        #[serde(default)]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Pin>,
    },
    /// Write `value` to `key`.
    Write { key: String, value: String },
    /// Compare-and-set: if `key` holds `from` (`None`: absent), set it to `to`.
    Cas { key: String, from: Option<String>, to: String },
    /// Set `key` to `value`, to expire `ttl_ms` after the write is proposed (`None`: never).
    Set {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Delete `key`. Whether it existed is not recorded: the checkers need only that it is gone.
    Delete { key: String },
}

/// The acknowledged operation a read was pinned to with `min_version` (see [`Op::Read`]).
/// JSON: `{"value":"p3-17"}` for a write, cas or set (values are unique in a test, so the value
/// names the write), `{"delete":812}` for a delete (named by the history index of its
/// invocation, as deletes carry no value).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    Value(String),
    Delete(u64),
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::Value(v) => write!(f, "the write of {v:?}"),
            Pin::Delete(i) => write!(f, "the delete invoked at event {i}"),
        }
    }
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key, .. }
            | Op::Write { key, .. }
            | Op::Cas { key, .. }
            | Op::Set { key, .. }
            | Op::Delete { key } => key,
        }
    }

    /// The function's name, as `f` spells it in the history: `read`, `write`, `cas`, `set`,
    /// `delete`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Cas { .. } => "cas",
            Op::Set { .. } => "set",
            Op::Delete { .. } => "delete",
        }
    }
}

/// Reads a history written as JSON lines.
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, serde_json::Error> {
    text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect()
}

/// Writes a history as JSON lines.
pub fn to_jsonl(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&serde_json::to_string(e).expect("history events always serialize"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_jsonl() {
        let events = vec![
            Event {
                index: 0,
                time_ns: 5,
                process: 1,
                kind: EventKind::Invoke,
                op: Op::Read { key: "k".into(), level: ReadLevel::Bounded(200), value: None, after: None },
                error: None,
            },
            Event {
                index: 1,
                time_ns: 9,
                process: 1,
                kind: EventKind::Ok,
                op: Op::Read {
                    key: "k".into(),
                    level: ReadLevel::Bounded(200),
                    value: Some("v1".into()),
                    after: Some(Pin::Value("v0".into())),
                },
                error: None,
            },
            Event {
                index: 2,
                time_ns: 10,
                process: 2,
                kind: EventKind::Info,
                op: Op::Cas { key: "k".into(), from: Some("a".into()), to: "b".into() },
                error: Some("timeout".into()),
            },
        ];
        let text = to_jsonl(&events);
        assert!(text.lines().next().unwrap().contains(r#""f":"read""#), "{text}");
        assert_eq!(parse_jsonl(&text).unwrap(), events);
    }

    #[test]
    fn cache_ops_round_trip_and_register_lines_still_parse() {
        let ops = [
            Op::Set { key: "k".into(), value: "p1-1".into(), ttl_ms: Some(500) },
            Op::Set { key: "k".into(), value: "p1-2".into(), ttl_ms: None },
            Op::Delete { key: "k".into() },
        ];
        let lines: Vec<String> = ops.iter().map(|op| serde_json::to_string(op).unwrap()).collect();
        assert_eq!(lines[0], r#"{"f":"set","key":"k","value":"p1-1","ttl_ms":500}"#);
        assert_eq!(lines[1], r#"{"f":"set","key":"k","value":"p1-2"}"#);
        assert_eq!(lines[2], r#"{"f":"delete","key":"k"}"#);
        for (op, line) in ops.iter().zip(&lines) {
            assert_eq!(&serde_json::from_str::<Op>(line).unwrap(), op);
        }
        // A register history written before the cache ops existed.
        let old = r#"{"index":0,"time_ns":5,"process":1,"kind":"invoke","op":{"f":"write","key":"k","value":"v"}}"#;
        let parsed = parse_jsonl(old).unwrap();
        assert_eq!(parsed[0].op, Op::Write { key: "k".into(), value: "v".into() });
        assert_eq!(parsed[0].op.name(), "write");
    }

    #[test]
    fn pins_serialize_only_when_present() {
        let read = |after| Op::Read { key: "k".into(), level: ReadLevel::Stale, value: None, after };
        let lines = [
            serde_json::to_string(&read(None)).unwrap(),
            serde_json::to_string(&read(Some(Pin::Value("p1-2".into())))).unwrap(),
            serde_json::to_string(&read(Some(Pin::Delete(812)))).unwrap(),
        ];
        assert_eq!(lines[0], r#"{"f":"read","key":"k","level":"stale","value":null}"#);
        assert_eq!(lines[1], r#"{"f":"read","key":"k","level":"stale","value":null,"after":{"value":"p1-2"}}"#);
        assert_eq!(lines[2], r#"{"f":"read","key":"k","level":"stale","value":null,"after":{"delete":812}}"#);
        for (line, after) in lines.iter().zip([None, Some(Pin::Value("p1-2".into())), Some(Pin::Delete(812))]) {
            assert_eq!(serde_json::from_str::<Op>(line).unwrap(), read(after));
        }
        // A read written before pins existed.
        let old = r#"{"f":"read","key":"k","level":"linearizable","value":"v"}"#;
        assert!(matches!(serde_json::from_str::<Op>(old).unwrap(), Op::Read { after: None, .. }));
    }
}
