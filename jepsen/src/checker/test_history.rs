//! Hand-written histories for the checkers' tests. Times are given in milliseconds.

use crate::history::{Event, EventKind, Op, Pin, Process, ReadLevel};

/// A history under construction.
#[derive(Default)]
pub struct H {
    pub events: Vec<Event>,
}

impl H {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, process: Process, at_ms: u64, kind: EventKind, op: Op) {
        let index = self.events.len() as u64;
        self.events.push(Event { index, time_ns: at_ms * 1_000_000, process, kind, op, error: None });
    }

    /// Appends one event as given (the caller keeps time order).
    pub fn invoke(&mut self, process: Process, at_ms: u64, op: Op) {
        self.push(process, at_ms, EventKind::Invoke, op);
    }
    pub fn ok(&mut self, process: Process, at_ms: u64, op: Op) {
        self.push(process, at_ms, EventKind::Ok, op);
    }

    /// Adds a whole operation on `process` over `[start_ms, end_ms]` completing as `kind`;
    /// `op` is the completion's op (a read's value is cleared in the invocation). Call
    /// [`H::history`] to sort the events by time.
    pub fn call(&mut self, process: Process, start_ms: u64, end_ms: u64, kind: EventKind, op: Op) -> &mut Self {
        let invoked = match &op {
            Op::Read { key, level, after, .. } => {
                Op::Read { key: key.clone(), level: *level, value: None, after: after.clone() }
            }
            other => other.clone(),
        };
        self.push(process, start_ms, EventKind::Invoke, invoked);
        self.push(process, end_ms, kind, op);
        self
    }

    /// Shorthands for [`H::call`].
    pub fn w(&mut self, p: Process, s: u64, e: u64, key: &str, v: &str) -> &mut Self {
        self.call(p, s, e, EventKind::Ok, Self::write(key, v))
    }
    pub fn r(&mut self, p: Process, s: u64, e: u64, key: &str, v: Option<&str>) -> &mut Self {
        self.call(p, s, e, EventKind::Ok, Self::read_ok(key, v))
    }

    /// An acknowledged set of `key` to `v` over `[s, e]`, with a TTL of `ttl_ms` (`None`: no TTL).
    pub fn s(&mut self, p: Process, s: u64, e: u64, key: &str, v: &str, ttl_ms: Option<u64>) -> &mut Self {
        self.call(p, s, e, EventKind::Ok, Self::set(key, v, ttl_ms))
    }
    /// An acknowledged delete of `key` over `[s, e]`.
    pub fn d(&mut self, p: Process, s: u64, e: u64, key: &str) -> &mut Self {
        self.call(p, s, e, EventKind::Ok, Self::delete(key))
    }

    /// An invocation that never completes.
    pub fn pending(&mut self, p: Process, s: u64, op: Op) -> &mut Self {
        self.push(p, s, EventKind::Invoke, op);
        self
    }

    /// The events sorted by time (stable, so a process's invoke stays before its completion), with
    /// indexes renumbered.
    pub fn history(&self) -> Vec<Event> {
        let mut events = self.events.clone();
        events.sort_by_key(|e| e.time_ns);
        for (i, e) in events.iter_mut().enumerate() {
            e.index = i as u64;
        }
        events
    }

    pub fn write(key: &str, v: &str) -> Op {
        Op::Write { key: key.into(), value: v.into() }
    }
    pub fn cas(key: &str, from: Option<&str>, to: &str) -> Op {
        Op::Cas { key: key.into(), from: from.map(Into::into), to: to.into() }
    }
    pub fn set(key: &str, v: &str, ttl_ms: Option<u64>) -> Op {
        Op::Set { key: key.into(), value: v.into(), ttl_ms }
    }
    pub fn delete(key: &str) -> Op {
        Op::Delete { key: key.into() }
    }
    pub fn read(key: &str) -> Op {
        Op::Read { key: key.into(), level: ReadLevel::Linearizable, value: None, after: None }
    }
    pub fn read_ok(key: &str, v: Option<&str>) -> Op {
        Op::Read { key: key.into(), level: ReadLevel::Linearizable, value: v.map(Into::into), after: None }
    }
    pub fn read_at(key: &str, level: ReadLevel, v: Option<&str>) -> Op {
        Op::Read { key: key.into(), level, value: v.map(Into::into), after: None }
    }
    /// A read at `level` pinned (`min_version`) to `pin`, returning `v`.
    pub fn pinned(key: &str, level: ReadLevel, pin: Pin, v: Option<&str>) -> Op {
        Op::Read { key: key.into(), level, value: v.map(Into::into), after: Some(pin) }
    }
}

/// One operation of a generated history, before it is given a process.
pub struct Gen {
    pub op: Op,
    pub outcome: EventKind,
    /// No completion event at all.
    pub pending: bool,
    pub invoke: u64,
    pub complete: u64,
}

/// Gives each operation a process that is free at its invocation, and orders the events.
pub fn to_events(mut gens: Vec<Gen>) -> Vec<Event> {
    gens.sort_by_key(|g| g.invoke);
    let mut free_at: Vec<u64> = Vec::new(); // per process: when its last op completed
    let mut events: Vec<(u64, Event)> = Vec::new();
    for g in gens {
        let p = match free_at.iter().position(|&f| f < g.invoke) {
            Some(p) => p,
            None => {
                free_at.push(0);
                free_at.len() - 1
            }
        };
        free_at[p] = if g.pending { u64::MAX } else { g.complete };
        let process = p as Process;
        let invoked = match &g.op {
            Op::Read { key, level, after, .. } => {
                Op::Read { key: key.clone(), level: *level, value: None, after: after.clone() }
            }
            other => other.clone(),
        };
        let event = |time_ns, kind, op| Event { index: 0, time_ns, process, kind, op, error: None };
        events.push((g.invoke, event(g.invoke, EventKind::Invoke, invoked)));
        if !g.pending {
            events.push((g.complete, event(g.complete, g.outcome, g.op)));
        }
    }
    events.sort_by_key(|(t, _)| *t);
    events
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut e))| {
            e.index = i as u64;
            e
        })
        .collect()
}
