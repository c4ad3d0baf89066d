//! Hand-written histories for the checkers' tests. Times are given in milliseconds.

use crate::history::{Event, EventKind, Op, Process, ReadLevel};

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
            Op::Read { key, level, .. } => Op::Read { key: key.clone(), level: *level, value: None },
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
    pub fn read(key: &str) -> Op {
        Op::Read { key: key.into(), level: ReadLevel::Linearizable, value: None }
    }
    pub fn read_ok(key: &str, v: Option<&str>) -> Op {
        Op::Read { key: key.into(), level: ReadLevel::Linearizable, value: v.map(Into::into) }
    }
    pub fn read_at(key: &str, level: ReadLevel, v: Option<&str>) -> Op {
        Op::Read { key: key.into(), level, value: v.map(Into::into) }
    }
}
