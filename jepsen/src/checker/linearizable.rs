//! Linearizability of each key as a register under writes, compare-and-sets and linearizable reads,
//! and, for the cache workload, as a register whose value may expire (sets with a TTL, deletes).
//!
//! **What it checks.** A history is linearizable if every operation can be given a single instant
//! between its invocation and its completion such that, taken in the order of those instants, the
//! operations are a legal run of the model (Herlihy & Wing). The model is one register per key,
//! absent initially: a write sets it; `cas(from, to)` sets it to `to` only if it holds `from`; a
//! read returns exactly what it holds. Linearizability is compositional (the P-compositionality
//! of Horn & Kroening), so each key is checked on its own.
//!
//! **Expiry.** For the cache workload the register's state is `absent` or `present(value,
//! earliest expiry)`: a set of `v` with TTL `T` invoked at `t` leaves `present(v, t + T - slack)`
//! (see [`super::ttl`] for why that is the earliest a correct node may expire it, and what the
//! slack covers); a set without TTL leaves `present(v, never)`; a delete leaves `absent`. A read
//! of `present(v, e)` may return `v` at any instant (expiry may be late: purging is lazy, and a
//! node whose clock lags still shows the entry), or `absent` if its instant is at or after `e`.
//! An expired entry stays in the state, since another node may still show it. Instants must not
//! decrease along the linearization, so an expiry read at `e` pushes every operation linearized
//! after it to `e` or later: the search keeps that time floor (the earliest instant the next
//! operation can take) with the state, and an operation whose completion is before the floor
//! cannot come next. A key with no TTL and no delete never raises the floor, and the check is the
//! plain register's.
//!
//! **Which operations count.**
//! * `Ok`: it happened, between its invocation and completion. An `Ok` cas succeeded.
//! * `Fail`: it certainly did not happen, so it is dropped. (A failed cas tells us the register did
//!   not hold `from` at some point; dropping it only makes the check weaker, never wrong.)
//! * `Info`, or never completed: it may have taken effect at any instant after its invocation, or
//!   never; its completion is taken as +infinity and the search may leave it out. An indeterminate
//!   read is dropped: it returned nothing, so it constrains nothing.
//! * Only reads at level `linearizable` are judged here; `bounded` and `stale` reads promise less
//!   and are the staleness checker's.
//!
//! **How.** The search of Wing & Gong as improved by Lowe and implemented in Porcupine: sort the
//! call and return entries by time (a call before a return at the same instant, so equal timestamps
//! count as concurrent), then walk the list depth-first; at a call, try to linearize that operation
//! now (apply it to the model, unlink it, restart from the head); at a return whose operation is not
//! yet linearized, backtrack. A memo of (set of linearized operations as a bitset, model state)
//! prunes configurations already explored. The key is valid once every `Ok` operation is
//! linearized; indeterminate ones may remain. Values are interned to small integers first, and
//! indeterminate writes whose value nothing observes are left out before the search (they can
//! never help it, and they are what makes it blow up after a crash: see `drop_unobserved`).
//!
//! **Why it is sound.** It trusts nothing but the history: real-time order from one clock, and the
//! values clients sent and received. Versions, bounds, node ids or anything else the system reports
//! are ignored, so a system that lies about them cannot talk its way to `valid`. The search is
//! exhaustive, so `valid` means a linearization exists and `invalid` means none does. The search is
//! exponential in the worst case: each call takes a wall-clock budget (and the memo a size cap), and
//! a key not decided within it is `unknown`, never `valid`.
//!
//! **Explaining a failure.** An invalid key reports the operation the deepest partial linearization
//! could not get past, that prefix (as invocation event indexes), the register's value after it,
//! and the operations concurrent with the failing one. On top of that a few simple rules, each a
//! proof of non-linearizability on its own given unique written values, look for a minimal
//! witness: a value never written or written only by a failed write; a value whose write began
//! after the read ended; a stale value (a write or delete began after the value's write completed
//! and was acknowledged before the read began); `absent` after an acknowledged write with no
//! delete or possible expiry since ([`super::ttl::unexplained_absence`]): an **early expiry** when
//! that write had a TTL, reported as its own anomaly ([`LinearizabilityAnomaly::early_expiry`]);
//! two successful cas from a value written once. The same rules decide a key whose search ran out
//! of budget, when they apply.
//!
//! **Not checked here.** Bounded and stale reads, `min_version` (not in the history), and anything
//! about the system's reported versions or expiry times.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::operation::{value_str, Operation};
use super::ttl::{self, EarlyExpiry};
use super::Verdict;
use crate::history::{EventKind, Op, ReadLevel};

/// The result for one key, or for the whole history (invalid if any key is, else unknown if any
/// key is, else valid).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum LinearizabilityResult {
    Valid,
    /// The first invalid key, in key order, with its explanation.
    Invalid {
        key: String,
        anomaly: Box<LinearizabilityAnomaly>,
    },
    /// Keys whose search ran out of budget (none of them invalid by the simple rules).
    Unknown {
        keys: Vec<String>,
    },
}

impl LinearizabilityResult {
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::Valid => Verdict::Valid,
            Self::Invalid { .. } => Verdict::Invalid,
            Self::Unknown { .. } => Verdict::Unknown,
        }
    }
}

/// Why a key is not linearizable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LinearizabilityAnomaly {
    pub key: String,
    /// For people: the simplest account found of what went wrong.
    pub explanation: String,
    /// A minimal set of operations that shows the anomaly on its own (in invocation order), when
    /// one of the simple rules found it; empty otherwise.
    pub witness: Vec<Operation>,
    /// The operation the deepest partial linearization could not get past.
    pub op: Operation,
    /// That partial linearization: invocation event indexes, in linearization order. Empty when
    /// the search ran out of budget and a simple rule decided the key.
    pub prefix: Vec<u64>,
    /// The register's value after `prefix` (`None`: absent).
    pub state_after_prefix: Option<String>,
    /// The operations (not dropped) whose interval overlaps `op`'s.
    pub concurrent: Vec<Operation>,
    /// Set when the simplest account is an entry that disappeared before its TTL can have
    /// passed; the report then lists this key's anomaly as an early expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_expiry: Option<Box<EarlyExpiry>>,
}

/// One key's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyReport {
    pub key: String,
    /// Operations judged (after dropping failed ones, indeterminate reads and non-linearizable
    /// reads).
    pub ops: usize,
    pub elapsed_us: u64,
    pub result: LinearizabilityResult,
}

/// The outcome for a whole history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LinearizabilityReport {
    pub result: LinearizabilityResult,
    /// Every key, in key order.
    pub keys: Vec<KeyReport>,
}

/// Checks every key of `ops` (from [`super::operation::pair`]) within `budget` of wall-clock time
/// for the whole call; keys are checked in parallel. A key not decided in time is `Unknown`.
/// `slack_ms` is the TTL slack ([`super::ttl`]).
pub fn check(ops: &[Operation], budget: Duration, slack_ms: u64) -> LinearizabilityReport {
    let deadline = Instant::now().checked_add(budget);
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.op.key()).or_default().push(op.clone());
    }
    let by_key: Vec<(&str, Vec<Operation>)> = by_key.into_iter().collect();

    // Keys are independent: a shared counter hands them out to a few threads.
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, by_key.len().max(1));
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((key, ops)) = by_key.get(i) else { return done };
            let started = Instant::now();
            let (judged, result) = check_key(key, ops, deadline, slack_ms);
            let elapsed_us = started.elapsed().as_micros() as u64;
            done.push((i, KeyReport { key: key.to_string(), ops: judged, elapsed_us, result }));
        }
    };
    let mut keys: Vec<(usize, KeyReport)> = if threads <= 1 {
        worker()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            handles.into_iter().flat_map(|h| h.join().expect("checker thread panicked")).collect()
        })
    };
    keys.sort_by_key(|(i, _)| *i);
    let keys: Vec<KeyReport> = keys.into_iter().map(|(_, k)| k).collect();

    let result = if let Some(invalid) = keys.iter().find(|k| k.result.verdict() == Verdict::Invalid) {
        invalid.result.clone()
    } else {
        let unknown: Vec<String> =
            keys.iter().filter(|k| k.result.verdict() == Verdict::Unknown).map(|k| k.key.clone()).collect();
        if unknown.is_empty() {
            LinearizabilityResult::Valid
        } else {
            LinearizabilityResult::Unknown { keys: unknown }
        }
    };
    LinearizabilityReport { result, keys }
}

/// Interned value `0`, and state `0`: absent.
const ABSENT: u32 = 0;
/// The earliest expiry of an entry that never expires.
const NEVER: u64 = u64::MAX;

/// A register state: an interned value and its earliest expiry (ns on the history's clock;
/// [`NEVER`] for none). The absent state is `(ABSENT, NEVER)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    value: u32,
    expires: u64,
}

/// Values and states as small integers, so the search's memo stays compact.
struct Interner<'a> {
    value_ids: HashMap<&'a str, u32>,
    values: Vec<Option<&'a str>>,
    state_ids: HashMap<State, u32>,
    states: Vec<State>,
}

impl<'a> Interner<'a> {
    fn new() -> Self {
        let absent = State { value: ABSENT, expires: NEVER };
        Interner {
            value_ids: HashMap::new(),
            values: vec![None],
            state_ids: HashMap::from([(absent, 0)]),
            states: vec![absent],
        }
    }

    fn value(&mut self, v: Option<&'a str>) -> u32 {
        let Some(v) = v else { return ABSENT };
        *self.value_ids.entry(v).or_insert_with(|| {
            self.values.push(Some(v));
            self.values.len() as u32 - 1
        })
    }

    fn state(&mut self, v: &'a str, expires: u64) -> u32 {
        let state = State { value: self.value(Some(v)), expires };
        *self.state_ids.entry(state).or_insert_with(|| {
            self.states.push(state);
            self.states.len() as u32 - 1
        })
    }

    fn value_of(&self, state: u32) -> Option<&'a str> {
        self.values[self.states[state as usize].value as usize]
    }
}

/// What an operation does to the register: states and values interned.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Leaves this state (a write or a set).
    Write(u32),
    /// From this value to this state.
    Cas(u32, u32),
    /// Returns this value.
    Read(u32),
    Delete,
}

impl Step {
    /// The state and time floor after this operation, linearized in `state` no earlier than
    /// `floor` and no later than its completion `ret`; `None` if it cannot be. Seeing absent in
    /// a state with an earliest expiry `e` is possible at `max(floor, e)`, if that is by `ret`.
    fn apply(self, state: u32, floor: u64, ret: u64, states: &[State]) -> Option<(u32, u64)> {
        if floor > ret {
            return None;
        }
        let now = states[state as usize];
        let sees = |v: u32| -> Option<u64> {
            if now.value == v {
                Some(floor)
            } else if v == ABSENT && now.expires != NEVER {
                let at = floor.max(now.expires);
                (at <= ret).then_some(at)
            } else {
                None
            }
        };
        match self {
            Step::Write(s) => Some((s, floor)),
            Step::Delete => Some((0, floor)),
            Step::Cas(from, to) => sees(from).map(|at| (to, at)),
            Step::Read(v) => sees(v).map(|at| (state, at)),
        }
    }
}

/// An operation the search must (`required`) or may place.
struct Judged<'a> {
    op: &'a Operation,
    call: u64,
    ret: u64,
    required: bool,
    step: Step,
}

/// Where the search got stuck: the deepest partial linearization (operation indexes into the
/// judged list), the state after it, and the operation whose return it could not get past.
struct Stuck {
    prefix: Vec<usize>,
    state: u32,
    failing: usize,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// FxHash (as in rustc): the memo hashes short slices of `u64` millions of times, and SipHash's
/// resistance to adversarial keys buys nothing here.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Configurations already explored: the bitset of linearized operations with the model state and
/// the time floor appended as two more words.
type Memo = HashSet<Box<[u64]>, BuildHasherDefault<FxHasher>>;

/// At most this many configurations are remembered (about 100 bytes each for a few hundred
/// operations); a search that needs more is `unknown`, as if out of time, rather than exhausting
/// the harness's memory under a long budget.
const MAX_MEMO: usize = 4_000_000;

/// Checks one key's operations (all on `key`, any outcome, in any order) against the register
/// model, giving up at `deadline`; `slack_ms` is the TTL slack. Returns how many operations were
/// judged, and the result.
pub fn check_key(
    key: &str,
    ops: &[Operation],
    deadline: Option<Instant>,
    slack_ms: u64,
) -> (usize, LinearizabilityResult) {
    let mut intern = Interner::new();
    let mut judged: Vec<Judged> = Vec::new();
    for op in ops {
        let required = match op.outcome {
            EventKind::Ok => true,
            EventKind::Info | EventKind::Invoke => false,
            EventKind::Fail => continue,
        };
        let step = match &op.op {
            Op::Write { value, .. } => Step::Write(intern.state(value, NEVER)),
            Op::Set { value, .. } => {
                Step::Write(intern.state(value, ttl::earliest_expiry_ns(op, slack_ms).unwrap_or(NEVER)))
            }
            Op::Cas { from, to, .. } => Step::Cas(intern.value(from.as_deref()), intern.state(to, NEVER)),
            Op::Delete { .. } => Step::Delete,
            Op::Read { level: ReadLevel::Linearizable, value, .. } if required => {
                Step::Read(intern.value(value.as_deref()))
            }
            Op::Read { .. } => continue,
        };
        let ret = if required { op.complete_ns.unwrap_or(u64::MAX) } else { u64::MAX };
        judged.push(Judged { op, call: op.invoke_ns, ret, required, step });
    }
    drop_unobserved(&mut judged, &intern.states);
    let n = judged.len();

    if deadline.is_some_and(|d| Instant::now() >= d) {
        return (n, unknown_or_rule(key, ops, &judged, slack_ms));
    }
    match search(&judged, &intern.states, deadline) {
        Search::Linearizable => (n, LinearizabilityResult::Valid),
        Search::OutOfTime => (n, unknown_or_rule(key, ops, &judged, slack_ms)),
        Search::Stuck(stuck) => {
            let failing = judged[stuck.failing].op;
            let state = intern.value_of(stuck.state);
            let (explanation, witness, early_expiry) = match diagnose(ops, Some(failing), slack_ms) {
                Some(d) => (d.explanation, d.witness, d.early_expiry),
                None => (generic_explanation(&judged, &stuck, state), Vec::new(), None),
            };
            let anomaly = LinearizabilityAnomaly {
                key: key.to_string(),
                explanation,
                witness,
                op: failing.clone(),
                prefix: stuck.prefix.iter().map(|&i| judged[i].op.invoke_index).collect(),
                state_after_prefix: state.map(str::to_string),
                concurrent: concurrent_with(&judged, stuck.failing),
                early_expiry,
            };
            (n, LinearizabilityResult::Invalid { key: key.to_string(), anomaly: Box::new(anomaly) })
        }
    }
}

/// Leaves out indeterminate writes and cas whose value no judged operation observes (no read
/// returns it, no cas expects it), unless the value may expire and something observes absent;
/// and indeterminate deletes, unless something observes absent. Sound: such an operation,
/// wherever linearized, leaves the register in a state that only a write or delete can follow
/// (reads and cas all need other values), so removing it from any linearization leaves a
/// linearization (with the same time floor: writes and deletes never raise it). It only ever
/// helps the search, and indeterminate operations that stay concurrent with everything after them
/// are what makes it exponential. Repeats until nothing changes, since dropping a cas
/// un-observes its `from`.
fn drop_unobserved(judged: &mut Vec<Judged>, states: &[State]) {
    loop {
        let mut observed = HashSet::new();
        for j in judged.iter() {
            match j.step {
                Step::Read(v) | Step::Cas(v, _) => observed.insert(v),
                Step::Write(_) | Step::Delete => false,
            };
        }
        let absent_observed = observed.contains(&ABSENT);
        let before = judged.len();
        judged.retain(|j| match j.step {
            _ if j.required => true,
            Step::Write(s) | Step::Cas(_, s) => {
                let state = states[s as usize];
                observed.contains(&state.value) || (absent_observed && state.expires != NEVER)
            }
            Step::Delete => absent_observed,
            Step::Read(_) => true,
        });
        if judged.len() == before {
            return;
        }
    }
}

enum Search {
    Linearizable,
    Stuck(Stuck),
    OutOfTime,
}

/// The Porcupine search over the entry list (see the module docs), with the time floor.
fn search(judged: &[Judged], states: &[State], deadline: Option<Instant>) -> Search {
    let n = judged.len();
    let required_total = judged.iter().filter(|j| j.required).count();

    // Nodes: 0 is the list head; operation i has its call at 2i+1 and its return at 2i+2. Returns
    // of optional operations sort after every other entry.
    let op_of = |node: usize| (node - 1) / 2;
    let is_call = |node: usize| node % 2 == 1;
    let mut order: Vec<usize> = (1..=2 * n).collect();
    order.sort_by_key(|&node| {
        let j = &judged[op_of(node)];
        match (is_call(node), j.required) {
            (true, _) => (0, j.call, 0),
            (false, true) => (0, j.ret, 1),
            (false, false) => (1, 0, 0),
        }
    });
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = HEAD;
    for &node in &order {
        next[last] = node;
        prev[node] = last;
        last = node;
    }

    // Unlinks a call entry and its return; `relink` undoes it. The unlinked nodes keep their own
    // prev/next, which is what makes the undo O(1) (Knuth's dancing links).
    fn unlink(next: &mut [usize], prev: &mut [usize], node: usize) {
        for node in [node, node + 1] {
            next[prev[node]] = next[node];
            if next[node] != NIL {
                prev[next[node]] = prev[node];
            }
        }
    }
    fn relink(next: &mut [usize], prev: &mut [usize], node: usize) {
        for node in [node + 1, node] {
            next[prev[node]] = node;
            if next[node] != NIL {
                prev[next[node]] = node;
            }
        }
    }

    // The earliest completion among the operations still to linearize other than `skip` (the
    // one about to be): the first return left in the list, since required operations' returns
    // are sorted and optional ones' (at u64::MAX) come last.
    let first_open_ret = |next: &[usize], skip: usize| -> u64 {
        let mut node = next[HEAD];
        while node != NIL {
            if !is_call(node) && op_of(node) != skip {
                return judged[op_of(node)].ret;
            }
            node = next[node];
        }
        u64::MAX
    };

    let words = n.div_ceil(64).max(1);
    // `config[..words]` is the set of linearized operations; `config[words]` and
    // `config[words + 1]` are scratch for the state and the time floor when probing the memo.
    let mut config = vec![0u64; words + 2];
    let mut memo = Memo::default();
    let mut calls: Vec<(usize, u32, u64)> = Vec::new(); // (call node, state and floor before it)
    let mut state = 0u32;
    // The earliest instant the next operation can be linearized at: raised only by reads that
    // saw an entry expire (the instants of other operations are implicit in the entry order).
    let mut floor = 0u64;
    let mut required_done = 0;
    let mut stuck: Option<Stuck> = None;
    let mut steps = 0u64;
    let mut entry = next[HEAD];
    loop {
        if required_done == required_total {
            return Search::Linearizable;
        }
        steps += 1;
        if steps & 0xff == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return Search::OutOfTime;
        }
        // Unreachable NIL: some required operation is not linearized yet, and its return sorts
        // before every optional return, so the walk meets it first.
        assert_ne!(entry, NIL, "walked off the entry list with required operations left");
        let i = op_of(entry);
        if is_call(entry) {
            // A raised floor must leave every other operation still to linearize room before its
            // completion; otherwise the walk would only find that out at its return.
            let step = judged[i].step.apply(state, floor, judged[i].ret, states);
            if let Some((new_state, new_floor)) = step.filter(|&(_, f)| f == floor || f <= first_open_ret(&next, i)) {
                config[i / 64] |= 1 << (i % 64);
                config[words] = u64::from(new_state);
                config[words + 1] = new_floor;
                let fresh = !memo.contains(&config[..]);
                if fresh {
                    if memo.len() >= MAX_MEMO {
                        return Search::OutOfTime;
                    }
                    memo.insert(config.clone().into_boxed_slice());
                    calls.push((entry, state, floor));
                    state = new_state;
                    floor = new_floor;
                    unlink(&mut next, &mut prev, entry);
                    required_done += usize::from(judged[i].required);
                    entry = next[HEAD];
                    continue;
                }
                config[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // Operation i had to take effect by now and could not: remember the deepest such point,
            // then undo the last linearized operation and try the next entry after it.
            if stuck.as_ref().is_none_or(|s| calls.len() > s.prefix.len()) {
                stuck = Some(Stuck { prefix: calls.iter().map(|&(c, _, _)| op_of(c)).collect(), state, failing: i });
            }
            let Some((node, before, floor_before)) = calls.pop() else {
                return Search::Stuck(stuck.expect("just set"));
            };
            let j = op_of(node);
            config[j / 64] &= !(1 << (j % 64));
            state = before;
            floor = floor_before;
            relink(&mut next, &mut prev, node);
            required_done -= usize::from(judged[j].required);
            entry = next[node];
        }
    }
}

/// The judged operations whose interval overlaps operation `i`'s (ties overlap).
fn concurrent_with(judged: &[Judged], i: usize) -> Vec<Operation> {
    let f = &judged[i];
    judged
        .iter()
        .enumerate()
        .filter(|&(j, o)| j != i && o.call <= f.ret && f.call <= o.ret)
        .map(|(_, o)| o.op.clone())
        .collect()
}

/// After a search ran out of time: invalid if a simple rule proves it, else unknown.
fn unknown_or_rule(key: &str, ops: &[Operation], judged: &[Judged], slack_ms: u64) -> LinearizabilityResult {
    let Some(Diagnosis { explanation, witness, offender: op, early_expiry }) = diagnose(ops, None, slack_ms) else {
        return LinearizabilityResult::Unknown { keys: vec![key.to_string()] };
    };
    let concurrent = judged
        .iter()
        .filter(|o| *o.op != op && o.call <= op.effective_complete_ns() && op.invoke_ns <= o.ret)
        .map(|o| o.op.clone())
        .collect();
    let anomaly = LinearizabilityAnomaly {
        key: key.to_string(),
        explanation: format!("{explanation} (found by rule; the full search ran out of its time budget)"),
        witness,
        op,
        prefix: Vec::new(),
        state_after_prefix: None,
        concurrent,
        early_expiry,
    };
    LinearizabilityResult::Invalid { key: key.to_string(), anomaly: Box::new(anomaly) }
}

fn generic_explanation(judged: &[Judged], stuck: &Stuck, state: Option<&str>) -> String {
    let f = judged[stuck.failing].op;
    let what = match &f.op {
        Op::Read { value, .. } => format!("return {}", value_str(value.as_deref())),
        Op::Cas { from, .. } => format!("find {}", value_str(from.as_deref())),
        Op::Write { .. } | Op::Set { .. } | Op::Delete { .. } => "take effect".to_string(),
    };
    let concurrent = concurrent_with(judged, stuck.failing).len();
    format!(
        "{f} cannot be linearized: the longest linearizable prefix has {} operations and leaves the register \
         {}, and no order of the {concurrent} concurrent operations lets it {what}",
        stuck.prefix.len(),
        value_str(state),
    )
}

/// A proof by simple rule that a key is not linearizable.
struct Diagnosis {
    explanation: String,
    /// The operations the proof needs, in invocation order.
    witness: Vec<Operation>,
    /// The read or cas that observed what it could not have.
    offender: Operation,
    /// When the proof is an entry gone before its TTL can have passed.
    early_expiry: Option<Box<EarlyExpiry>>,
}

impl Diagnosis {
    fn new(explanation: String, offender: &Operation, others: &[&Operation]) -> Self {
        let mut witness: Vec<Operation> = others.iter().map(|o| (*o).clone()).collect();
        witness.push(offender.clone());
        witness.sort_by_key(|o| o.invoke_index);
        Diagnosis { explanation, witness, offender: offender.clone(), early_expiry: None }
    }
}

/// Simple rules, each enough on its own to prove a key non-linearizable when written values are
/// unique. Tries `focus` first, then every other `Ok` linearizable read and `Ok` cas in invocation
/// order. `slack_ms` is the TTL slack.
fn diagnose(ops: &[Operation], focus: Option<&Operation>, slack_ms: u64) -> Option<Diagnosis> {
    let all: Vec<&Operation> = ops.iter().collect();
    let acked_mutations: Vec<&Operation> = ops.iter().filter(|o| o.is_acknowledged_mutation()).collect();
    // With deletes or expiry the register can be absent again after it held a value.
    let absent_recurs = ops.iter().any(|o| matches!(o.op, Op::Delete { .. }) || o.ttl_ms().is_some());
    let rule = |x: &Operation| -> Option<Diagnosis> {
        if x.outcome != EventKind::Ok {
            return None;
        }
        let seen = match &x.op {
            Op::Read { level: ReadLevel::Linearizable, value, .. } => value.as_deref(),
            Op::Cas { from, .. } => from.as_deref(),
            _ => return None,
        };
        let Some(v) = seen else {
            // Absent: before the first write takes effect, or after a delete or an expiry.
            let anchors = ops.iter().filter(|w| w.is_acknowledged_write() && w.precedes(x));
            if let Some((w, between)) = ttl::unexplained_absence(x, anchors, &all, slack_ms) {
                let mut others = if absent_recurs { between } else { Vec::new() };
                others.push(w);
                if w.ttl_ms().is_some() {
                    let early = EarlyExpiry::new("linearizable", w, x, &others[..others.len() - 1], slack_ms);
                    let mut d = Diagnosis::new(early.explanation.clone(), x, &others);
                    d.early_expiry = Some(Box::new(early));
                    return Some(d);
                }
                let since = if absent_recurs { " and no delete or expiry can have come between" } else { "" };
                return Some(Diagnosis::new(
                    format!("{x}: the register cannot be absent, {w} was acknowledged before it began{since}"),
                    x,
                    &others,
                ));
            }
            if absent_recurs {
                return None;
            }
            return twice_from(ops, x, None, None);
        };
        let writers: Vec<&Operation> = ops.iter().filter(|o| o.written_value() == Some(v)).collect();
        let live: Vec<&Operation> = writers.iter().copied().filter(|o| o.outcome != EventKind::Fail).collect();
        match live.as_slice() {
            [] => Some(match writers.first() {
                Some(failed) => {
                    Diagnosis::new(format!("{x}: {v:?} was written only by a failed operation, {failed}"), x, &[failed])
                }
                None => Diagnosis::new(format!("{x}: no operation wrote {v:?}"), x, &[]),
            }),
            [w] => {
                if x.precedes(w) {
                    return Some(Diagnosis::new(
                        format!("{x}: {v:?} was written only by {w}, which began after it completed"),
                        x,
                        &[w],
                    ));
                }
                if let Some(newer) = acked_mutations.iter().find(|n| w.precedes(n) && n.precedes(x)) {
                    return Some(Diagnosis::new(
                        format!(
                            "{x}: {v:?} was stale: {newer} began after {v:?} was written by {w}, and was \
                             acknowledged before it began"
                        ),
                        x,
                        &[w, newer],
                    ));
                }
                twice_from(ops, x, Some(v), Some(w))
            }
            // Written more than once: the rules above assume unique values.
            _ => None,
        }
    };
    if let Some(found) = focus.and_then(rule) {
        return Some(found);
    }
    ops.iter().filter(|o| Some(*o) != focus).find_map(rule)
}

/// Two successful compare-and-sets from a value written at most once (or from absent, which the
/// register holds only at the start) cannot both have happened: after the first, the register
/// never holds that value again.
fn twice_from(ops: &[Operation], x: &Operation, from: Option<&str>, writer: Option<&Operation>) -> Option<Diagnosis> {
    if !matches!(x.op, Op::Cas { .. }) {
        return None;
    }
    let other = ops.iter().find(|o| {
        *o != x && o.outcome == EventKind::Ok && matches!(&o.op, Op::Cas { from: f, .. } if f.as_deref() == from)
    })?;
    let others: Vec<&Operation> = writer.into_iter().chain([other]).collect();
    let from = value_str(from);
    Some(Diagnosis::new(
        format!("{other} and {x} both succeeded from {from}, which the register holds only once"),
        x,
        &others,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::operation::pair;
    use crate::checker::test_history::H;
    use crate::history::Event;

    fn check_history(events: &[Event], budget: Duration) -> LinearizabilityReport {
        let (ops, errors) = pair(events);
        assert!(errors.is_empty(), "{errors:?}");
        check(&ops, budget, ttl::TIMESTAMP_TOLERANCE_MS)
    }

    fn result(h: &H) -> LinearizabilityResult {
        check_history(&h.history(), Duration::from_secs(10)).result
    }

    fn anomaly(h: &H) -> LinearizabilityAnomaly {
        match result(h) {
            LinearizabilityResult::Invalid { anomaly, .. } => *anomaly,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn sequential_history_is_valid() {
        let mut h = H::new();
        h.r(1, 0, 1, "k", None);
        h.w(1, 2, 3, "k", "v1");
        h.r(2, 4, 5, "k", Some("v1"));
        h.call(1, 6, 7, EventKind::Ok, H::cas("k", Some("v1"), "v2"));
        h.call(2, 8, 9, EventKind::Fail, H::cas("k", Some("v1"), "v3"));
        h.r(1, 10, 11, "k", Some("v2"));
        h.w(2, 12, 13, "other", "o1");
        h.r(2, 14, 15, "other", Some("o1"));
        let report = check_history(&h.history(), Duration::from_secs(10));
        assert_eq!(report.result, LinearizabilityResult::Valid);
        assert_eq!(report.keys.iter().map(|k| (k.key.as_str(), k.ops)).collect::<Vec<_>>(), [("k", 5), ("other", 2)]);
    }

    #[test]
    fn concurrent_reads_may_see_either_value_of_an_overlapping_write() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.w(1, 20, 50, "k", "v2");
        h.r(2, 25, 30, "k", Some("v1"));
        h.r(2, 30, 40, "k", Some("v2")); // ends before the next read... which still sees v1:
        h.r(3, 35, 45, "k", Some("v1")); // fine, it began before v2's read ended
        h.r(4, 20, 20, "k", Some("v1")); // instantaneous, at the write's invocation
        h.r(5, 50, 60, "k", Some("v2"));
        assert_eq!(result(&h), LinearizabilityResult::Valid);
    }

    #[test]
    fn equal_timestamps_count_as_concurrent() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.w(1, 10, 20, "k", "v2"); // invoked the instant v1 completed
        h.r(2, 20, 30, "k", Some("v1")); // invoked the instant v2 completed
        assert_eq!(result(&h), LinearizabilityResult::Valid);
    }

    #[test]
    fn stale_read_is_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.w(1, 20, 30, "k", "v2");
        h.r(2, 40, 50, "k", Some("v1"));
        let a = anomaly(&h);
        assert_eq!(a.op.op, H::read_ok("k", Some("v1")));
        assert!(a.explanation.contains("stale"), "{}", a.explanation);
        assert_eq!(a.witness.len(), 3);
        assert_eq!(a.witness[1].op, H::write("k", "v2"));
        // The deepest prefix: both writes, leaving v2.
        assert_eq!(a.prefix, vec![0, 2]);
        assert_eq!(a.state_after_prefix.as_deref(), Some("v2"));
        assert!(a.concurrent.is_empty());
    }

    #[test]
    fn lost_write_is_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.r(2, 12, 14, "k", Some("v1"));
        h.w(1, 20, 30, "k", "v2"); // acknowledged, then never seen
        for t in (40..200).step_by(20) {
            h.r(2, t, t + 5, "k", Some("v1"));
        }
        let a = anomaly(&h);
        assert_eq!(a.op.invoke_ns, 40_000_000, "the first read after the lost write");
        assert!(a.explanation.contains("\"v2\""), "{}", a.explanation);
    }

    #[test]
    fn impossible_cas_is_invalid() {
        // From a value overwritten before the cas began.
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.w(1, 20, 30, "k", "b");
        h.call(2, 40, 50, EventKind::Ok, H::cas("k", Some("a"), "c"));
        let a = anomaly(&h);
        assert_eq!(a.op.op, H::cas("k", Some("a"), "c"));
        assert!(a.explanation.contains("stale"), "{}", a.explanation);

        // From a value never written.
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.call(2, 5, 50, EventKind::Ok, H::cas("k", Some("zzz"), "c"));
        assert!(anomaly(&h).explanation.contains("no operation wrote"));

        // From absent after a write was acknowledged.
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.call(2, 20, 30, EventKind::Ok, H::cas("k", None, "c"));
        assert!(anomaly(&h).explanation.contains("cannot be absent"));

        // Twice from the same value, concurrently: only one can succeed.
        let mut h = H::new();
        h.w(1, 0, 10, "k", "a");
        h.call(2, 20, 30, EventKind::Ok, H::cas("k", Some("a"), "b"));
        h.call(3, 20, 30, EventKind::Ok, H::cas("k", Some("a"), "c"));
        let a = anomaly(&h);
        assert!(a.explanation.contains("both succeeded"), "{}", a.explanation);
        assert_eq!(a.witness.len(), 3);
    }

    #[test]
    fn indeterminate_write_that_happened_is_valid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.call(2, 20, 30, EventKind::Info, H::write("k", "v2"));
        h.r(3, 40, 50, "k", Some("v1")); // not yet...
        h.r(3, 100, 110, "k", Some("v2")); // ...long after its Info: it took effect late
        h.r(3, 120, 130, "k", Some("v2"));
        h.pending(4, 60, H::cas("k", Some("v2"), "v3"));
        h.r(3, 140, 150, "k", Some("v3")); // a cas that never completed, also seen
        assert_eq!(result(&h), LinearizabilityResult::Valid);
    }

    #[test]
    fn indeterminate_write_that_did_not_happen_is_valid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.call(2, 20, 30, EventKind::Info, H::write("k", "v2"));
        h.pending(4, 35, H::cas("k", None, "v3")); // could never succeed: leaving it out is fine
        for t in (40..200).step_by(20) {
            h.r(3, t, t + 5, "k", Some("v1"));
        }
        assert_eq!(result(&h), LinearizabilityResult::Valid);
    }

    #[test]
    fn indeterminate_write_cannot_take_effect_before_its_invocation() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.r(3, 20, 30, "k", Some("v2"));
        h.call(2, 40, 50, EventKind::Info, H::write("k", "v2"));
        assert!(anomaly(&h).explanation.contains("which began after it completed"));
    }

    #[test]
    fn failed_write_read_is_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.call(2, 20, 30, EventKind::Fail, H::write("k", "v2"));
        h.r(3, 25, 50, "k", Some("v2"));
        let a = anomaly(&h);
        assert!(a.explanation.contains("only by a failed operation"), "{}", a.explanation);
        assert_eq!(a.witness.len(), 2);
    }

    #[test]
    fn read_of_a_value_never_written_is_invalid() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.r(3, 5, 50, "k", Some("ghost"));
        let a = anomaly(&h);
        assert!(a.explanation.contains("no operation wrote"), "{}", a.explanation);
        assert_eq!(a.concurrent.len(), 1);
    }

    #[test]
    fn anomaly_no_simple_rule_explains_is_still_found() {
        // v1 and v2 overlap, so either order is possible, but the reads see v1, v2, v1: v1 would have
        // to be written twice.
        let mut h = H::new();
        h.w(1, 0, 100, "k", "v1");
        h.w(2, 0, 100, "k", "v2");
        h.r(3, 110, 120, "k", Some("v1"));
        h.r(3, 130, 140, "k", Some("v2"));
        h.r(3, 150, 160, "k", Some("v1"));
        let a = anomaly(&h);
        assert!(a.witness.is_empty());
        assert!(a.explanation.contains("cannot be linearized"), "{}", a.explanation);
        assert_eq!(a.op.op, H::read_ok("k", Some("v2")));
        assert_eq!(a.prefix.len(), 3, "{a:#?}");
    }

    #[test]
    fn only_ok_linearizable_reads_are_judged() {
        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.call(2, 20, 30, EventKind::Ok, H::read_at("k", ReadLevel::Stale, Some("nonsense")));
        h.call(2, 40, 50, EventKind::Ok, H::read_at("k", ReadLevel::Bounded(10), None));
        h.call(3, 20, 30, EventKind::Info, H::read("k"));
        h.call(4, 20, 30, EventKind::Fail, H::read("k"));
        let report = check_history(&h.history(), Duration::from_secs(10));
        assert_eq!(report.result, LinearizabilityResult::Valid);
        assert_eq!(report.keys[0].ops, 1);
    }

    /// 40 indeterminate writes overlap everything after them, and reads see each of them in turn;
    /// a last read then sees a value only an impossible cas could have written. Proving that takes
    /// exploring every subset of the writes that could have taken effect before each read.
    fn pathological() -> H {
        let mut h = H::new();
        for i in 0..40 {
            h.call(100 + i, i, 1000, EventKind::Info, H::write("k", &format!("w{i}")));
        }
        for i in 0..40 {
            h.r(2, 100 + 2 * i, 101 + 2 * i, "k", Some(&format!("w{i}")));
        }
        h.pending(1, 50, H::cas("k", Some("never"), "x"));
        h.r(2, 190, 191, "k", Some("x"));
        h
    }

    #[test]
    fn out_of_budget_is_unknown_not_valid() {
        let started = Instant::now();
        let report = check_history(&pathological().history(), Duration::from_millis(200));
        assert_eq!(report.result, LinearizabilityResult::Unknown { keys: vec!["k".into()] });
        assert!(started.elapsed() < Duration::from_secs(5), "the budget is honoured");

        let mut h = H::new();
        h.w(1, 0, 10, "k", "v1");
        h.r(2, 20, 30, "k", Some("v1"));
        let report = check_history(&h.history(), Duration::ZERO);
        assert_eq!(report.result.verdict(), Verdict::Unknown);
    }

    #[test]
    fn out_of_budget_but_proven_by_rule_is_invalid() {
        let mut h = pathological();
        h.w(3, 200, 210, "k", "late");
        h.w(3, 220, 230, "k", "later");
        h.r(2, 240, 250, "k", Some("late"));
        let report = check_history(&h.history(), Duration::from_millis(100));
        let LinearizabilityResult::Invalid { anomaly, .. } = report.result else { panic!("{:?}", report.result) };
        assert!(anomaly.explanation.contains("ran out of its time budget"), "{}", anomaly.explanation);
        assert_eq!(anomaly.op.op, H::read_ok("k", Some("late")));
    }

    #[test]
    fn invalid_wins_over_unknown_across_keys() {
        let mut h = pathological();
        h.w(5, 2000, 2010, "j", "v1");
        h.r(5, 2020, 2030, "j", Some("v0"));
        let report = check_history(&h.history(), Duration::from_millis(100));
        assert!(matches!(&report.result, LinearizabilityResult::Invalid { key, .. } if key == "j"), "{report:?}");
        assert_eq!(report.keys[1].result.verdict(), Verdict::Unknown);
    }

    mod random {
        //! Random histories that are linearizable by construction: a sequential run of the model,
        //! each operation then given an interval around its linearization point.

        use super::*;
        use crate::checker::test_history::{to_events, Gen};
        use crate::history::Event;
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        /// `n` operations on one key; about `concurrency` overlap at any time.
        pub fn linearizable_history(rng: &mut StdRng, n: usize, concurrency: u64) -> Vec<Event> {
            const STEP: u64 = 1_000; // ns between linearization points
            let width = STEP * concurrency;
            let mut state: Option<String> = None;
            let mut written: Vec<String> = Vec::new();
            let mut gens = Vec::new();
            for i in 0..n {
                let point = width + STEP * (i as u64 + 1);
                let fresh = format!("v{i}");
                let roll = rng.gen_range(0..100);
                let (op, outcome) = if roll < 35 {
                    let outcome = if rng.gen_bool(0.1) { EventKind::Info } else { EventKind::Ok };
                    state = Some(fresh.clone());
                    (Op::Write { key: "k".into(), value: fresh.clone() }, outcome)
                } else if roll < 45 {
                    // Did not happen: the value is never read.
                    let outcome = if rng.gen_bool(0.5) { EventKind::Info } else { EventKind::Fail };
                    (Op::Write { key: "k".into(), value: fresh.clone() }, outcome)
                } else if roll < 60 {
                    if rng.gen_bool(0.7) || written.is_empty() {
                        let from = state.clone();
                        state = Some(fresh.clone());
                        let outcome = if rng.gen_bool(0.1) { EventKind::Info } else { EventKind::Ok };
                        (Op::Cas { key: "k".into(), from, to: fresh.clone() }, outcome)
                    } else {
                        let from = Some(written[rng.gen_range(0..written.len())].clone());
                        let outcome = if from == state { EventKind::Ok } else { EventKind::Fail };
                        if outcome == EventKind::Ok {
                            state = Some(fresh.clone());
                        }
                        (Op::Cas { key: "k".into(), from, to: fresh.clone() }, outcome)
                    }
                } else if rng.gen_bool(0.05) {
                    (
                        Op::Read { key: "k".into(), level: ReadLevel::Linearizable, value: None, after: None },
                        EventKind::Info,
                    )
                } else {
                    let value = state.clone();
                    (Op::Read { key: "k".into(), level: ReadLevel::Linearizable, value, after: None }, EventKind::Ok)
                };
                if op.key() == "k" && matches!(op, Op::Write { .. } | Op::Cas { .. }) {
                    written.push(fresh);
                }
                let pending = outcome == EventKind::Info && rng.gen_bool(0.3);
                gens.push(Gen {
                    op,
                    outcome,
                    pending,
                    invoke: point - rng.gen_range(1..=width),
                    complete: point + rng.gen_range(1..=width),
                });
            }
            to_events(gens)
        }

        /// Changes one `Ok` read so that it is provably wrong: to a value never written, to absent
        /// after an acknowledged write, or to a value a later acknowledged write overwrote before the
        /// read began. Returns false if the history has no `Ok` read.
        fn corrupt(rng: &mut StdRng, events: &mut [Event]) -> bool {
            let (ops, _) = pair(events);
            let reads: Vec<&Operation> =
                ops.iter().filter(|o| o.outcome == EventKind::Ok && matches!(o.op, Op::Read { .. })).collect();
            if reads.is_empty() {
                return false;
            }
            let read = reads[rng.gen_range(0..reads.len())];
            let acked: Vec<&Operation> = ops.iter().filter(|o| o.is_acknowledged_write()).collect();
            let stale = acked
                .iter()
                .filter(|w| acked.iter().any(|n| w.precedes(n) && n.precedes(read)))
                .map(|w| Some(w.written_value().unwrap().to_string()));
            let absent = acked.iter().any(|w| w.precedes(read)).then_some(None);
            let mut candidates: Vec<Option<String>> = stale.chain(absent).collect();
            candidates.push(Some("never-written".into()));
            let value = candidates.swap_remove(rng.gen_range(0..candidates.len()));
            let at = read.complete_index.unwrap() as usize;
            let Op::Read { value: v, .. } = &mut events[at].op else { unreachable!() };
            *v = value;
            true
        }

        #[test]
        fn random_linearizable_histories_are_valid_and_corrupted_ones_invalid() {
            for seed in 0..300 {
                let mut rng = StdRng::seed_from_u64(seed);
                let n = rng.gen_range(1..120);
                let concurrency = rng.gen_range(1..=10);
                let mut events = linearizable_history(&mut rng, n, concurrency);
                let report = check_history(&events, Duration::from_secs(30));
                assert_eq!(report.result, LinearizabilityResult::Valid, "seed {seed}");

                // The same history with reads at a bound is fine for the staleness checker too.
                let mut bounded = events.clone();
                for e in &mut bounded {
                    if let Op::Read { level, .. } = &mut e.op {
                        *level = ReadLevel::Bounded(seed % 3);
                    }
                }
                let (ops, _) = pair(&bounded);
                let stale = crate::checker::staleness::check(&ops, ttl::TIMESTAMP_TOLERANCE_MS);
                assert_eq!(stale.valid, Verdict::Valid, "seed {seed}: {:#?}", stale.violations);

                if corrupt(&mut rng, &mut events) {
                    let report = check_history(&events, Duration::from_secs(30));
                    assert_eq!(report.result.verdict(), Verdict::Invalid, "seed {seed}: {:?}", report.result);
                }
            }
        }

        /// `cargo test -p geocache-jepsen --release --lib -- --ignored --nocapture timing`
        #[test]
        #[ignore]
        fn timing_300_ops_concurrency_10() {
            let runs = 50u32;
            let mut valid = Vec::new();
            let mut invalid = Vec::new();
            let mut max_in_flight = 0;
            for seed in 0..u64::from(runs) {
                let mut rng = StdRng::seed_from_u64(1000 + seed);
                let mut events = linearizable_history(&mut rng, 300, 10);
                let mut in_flight = 0i64;
                for e in &events {
                    in_flight += if e.kind == EventKind::Invoke { 1 } else { -1 };
                    max_in_flight = max_in_flight.max(in_flight);
                }
                let started = Instant::now();
                let report = check_history(&events, Duration::from_secs(60));
                valid.push(started.elapsed());
                assert_eq!(report.result, LinearizabilityResult::Valid, "seed {seed}");
                if corrupt(&mut rng, &mut events) {
                    let started = Instant::now();
                    let report = check_history(&events, Duration::from_secs(60));
                    invalid.push(started.elapsed());
                    assert_eq!(report.result.verdict(), Verdict::Invalid, "seed {seed}");
                }
            }
            for (what, times) in [("valid", valid), ("corrupted", invalid)] {
                let mean = times.iter().sum::<Duration>() / times.len() as u32;
                let worst = times.iter().max().unwrap();
                let n = times.len();
                eprintln!("300 ops, concurrency 10 (at most {max_in_flight} in flight), {what}: mean {mean:?}, worst {worst:?} over {n}");
            }
        }
    }
}
