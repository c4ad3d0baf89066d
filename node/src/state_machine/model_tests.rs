//! Property test: random command sequences give the same responses and the same visible contents
//! on [`Cache`] and on [`Model`], a slow, obviously correct reference written from the module docs
//! (a `Vec` in LRU order, linear scans). Each sequence is also replayed on a cache restored from a
//! snapshot taken at a random point, which must answer and end up exactly like the original.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];
const CLIENTS: u64 = 3;

// ---- The reference model -----------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct ModelEntry {
    key: String,
    value: Bytes,
    version: u64,
    expires_at_ms: Option<u64>,
}

#[derive(Default)]
struct ModelSession {
    last_active_ms: u64,
    acked_below: u64,
    /// Sorted by seq.
    responses: Vec<(u64, Response)>,
}

#[derive(Default)]
struct Model {
    clock_ms: u64,
    limits: Limits,
    /// Every stored entry, dead or alive; least recently used first.
    lru: Vec<ModelEntry>,
    sessions: BTreeMap<u64, ModelSession>,
}

fn cost(e: &ModelEntry) -> u64 {
    (e.key.len() + e.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

impl Model {
    fn alive(&self, e: &ModelEntry) -> bool {
        e.expires_at_ms.is_none_or(|t| t > self.clock_ms)
    }

    fn stored(&self, key: &str) -> Option<usize> {
        self.lru.iter().position(|e| e.key == key)
    }

    fn live(&self, key: &str) -> Option<usize> {
        self.stored(key).filter(|&i| self.alive(&self.lru[i]))
    }

    fn used_bytes(&self) -> u64 {
        self.lru.iter().map(cost).sum()
    }

    fn live_entries(&self) -> Vec<ModelEntry> {
        self.lru.iter().filter(|e| self.alive(e)).cloned().collect()
    }

    fn get(&self, key: &str, now_ms: u64) -> Option<EntryView> {
        let now_ms = now_ms.max(self.clock_ms);
        let e = &self.lru[self.stored(key)?];
        if e.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return None;
        }
        Some(EntryView { value: e.value.clone(), version: e.version, expires_at_ms: e.expires_at_ms })
    }

    fn fits(&self, more_entries: u64, more_bytes: u64) -> bool {
        (self.limits.max_entries == 0 || self.lru.len() as u64 + more_entries <= self.limits.max_entries)
            && (self.limits.max_bytes == 0 || self.used_bytes() + more_bytes <= self.limits.max_bytes)
    }

    fn make_room(&mut self, more_entries: u64, more_bytes: u64) {
        if self.fits(more_entries, more_bytes) {
            return;
        }
        let clock = self.clock_ms;
        self.lru.retain(|e| e.expires_at_ms.is_none_or(|t| t > clock));
        while !self.fits(more_entries, more_bytes) && !self.lru.is_empty() {
            self.lru.remove(0);
        }
    }

    fn unchanged(&self, key: &str) -> Response {
        match self.live(key) {
            Some(i) => Response {
                existed: true,
                previous_version: self.lru[i].version,
                version: self.lru[i].version,
                expires_at_ms: self.lru[i].expires_at_ms,
                ..Response::default()
            },
            None => Response::default(),
        }
    }

    fn apply(&mut self, index: LogIndex, cmd: &Command) -> Response {
        self.clock_ms = self.clock_ms.max(cmd.now_ms);
        if let Some(w) = cmd.write_id {
            let s = self.sessions.entry(w.client_id).or_default();
            s.last_active_ms = self.clock_ms;
            if let Some((_, r)) = s.responses.iter().find(|(seq, _)| *seq == w.seq) {
                return r.clone();
            }
            if w.seq < s.acked_below {
                return Response { rejected: Some(Rejection::SessionExpired), ..Response::default() };
            }
        }
        let response = self.apply_op(index, &cmd.op);
        if let Some(w) = cmd.write_id {
            let s = self.sessions.entry(w.client_id).or_default();
            s.responses.push((w.seq, response.clone()));
            s.responses.sort_by_key(|(seq, _)| *seq);
            s.acked_below = s.acked_below.max(w.acked_below);
            let acked_below = s.acked_below;
            s.responses.retain(|(seq, _)| *seq >= acked_below);
            while s.responses.len() > MAX_RESPONSES_PER_CLIENT {
                let (seq, _) = s.responses.remove(0);
                s.acked_below = s.acked_below.max(seq + 1);
            }
        }
        response
    }

    fn apply_op(&mut self, index: LogIndex, op: &Op) -> Response {
        let done = Response { applied: true, ..Response::default() };
        match op {
            Op::Set { key, value, expires_at_ms, condition } => {
                let mut r = self.unchanged(key);
                let entry = ModelEntry {
                    key: key.clone(),
                    value: value.clone(),
                    version: index,
                    expires_at_ms: *expires_at_ms,
                };
                let max_bytes = self.limits.max_bytes;
                if max_bytes != 0 && cost(&entry) > max_bytes {
                    r.rejected = Some(Rejection::TooLarge { entry_bytes: cost(&entry), max_bytes });
                    return r;
                }
                let holds = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => !r.existed,
                    Condition::IfPresent => r.existed,
                    Condition::IfVersion(v) => r.existed && r.previous_version == *v,
                };
                if !holds {
                    return r;
                }
                r.applied = true;
                if let Some(i) = self.stored(key) {
                    self.lru.remove(i);
                }
                if !self.alive(&entry) {
                    r.version = 0;
                    r.expires_at_ms = None;
                    return r;
                }
                self.make_room(1, cost(&entry));
                r.version = index;
                r.expires_at_ms = *expires_at_ms;
                self.lru.push(entry);
                r
            }
            Op::Delete { key } => {
                let mut r = self.unchanged(key);
                if let Some(i) = self.live(key) {
                    self.lru.remove(i);
                    r.applied = true;
                    r.version = 0;
                    r.expires_at_ms = None;
                }
                r
            }
            Op::Expire { key, expires_at_ms } => {
                let mut r = self.unchanged(key);
                let Some(i) = self.live(key) else { return r };
                r.applied = true;
                let mut entry = self.lru.remove(i);
                entry.expires_at_ms = *expires_at_ms;
                entry.version = index;
                if self.alive(&entry) {
                    r.version = index;
                    r.expires_at_ms = *expires_at_ms;
                    self.lru.push(entry);
                } else {
                    r.version = 0;
                    r.expires_at_ms = None;
                }
                r
            }
            Op::Touch { keys } => {
                for key in keys {
                    if let Some(i) = self.live(key) {
                        let entry = self.lru.remove(i);
                        self.lru.push(entry);
                    }
                }
                done
            }
            Op::Tick => {
                let clock = self.clock_ms;
                self.lru.retain(|e| e.expires_at_ms.is_none_or(|t| t > clock));
                self.sessions.retain(|_, s| clock - s.last_active_ms <= SESSION_IDLE_MS);
                done
            }
            Op::Configure { max_entries, max_bytes } => {
                self.limits = Limits {
                    max_entries: max_entries.unwrap_or(self.limits.max_entries),
                    max_bytes: max_bytes.unwrap_or(self.limits.max_bytes),
                };
                self.make_room(0, 0);
                done
            }
            Op::Clear => {
                let clock = self.clock_ms;
                let existed = self.lru.iter().any(|e| e.expires_at_ms.is_none_or(|t| t > clock));
                self.lru.clear();
                Response { existed, ..done }
            }
        }
    }
}

// ---- Random command sequences ------------------------------------------------------------------

#[derive(Clone, Debug)]
enum CondSpec {
    Always,
    IfAbsent,
    IfPresent,
    /// The current version of the key being set (0 if absent), plus one if `wrong`.
    CurrentVersion {
        wrong: bool,
    },
}

#[derive(Clone, Debug)]
enum OpSpec {
    Set { key: usize, len: usize, fill: u8, ttl: Option<i64>, cond: CondSpec },
    Delete { key: usize },
    Expire { key: usize, ttl: Option<i64> },
    Touch { keys: Vec<usize> },
    Tick,
    Configure { max_entries: Option<u64>, max_bytes: Option<u64> },
    Clear,
}

#[derive(Clone, Debug)]
enum WriteSpec {
    Untagged,
    /// The client's next write; it has seen answers to all but its last `ack_lag` writes.
    New {
        client: u64,
        ack_lag: u64,
    },
    /// Resend (with a fresh `now_ms`) the client's write from `back` writes ago.
    Retry {
        client: u64,
        back: u64,
    },
}

#[derive(Clone, Debug)]
struct Step {
    /// Added to the proposer's clock; negative steps model a new leader whose clock lags.
    dt: i64,
    /// Log indexes the cache never sees (membership, blank entries) before this one.
    index_gap: u64,
    op: OpSpec,
    write: WriteSpec,
    /// How far ahead of the proposer the reading node's clock is.
    read_skew: u64,
}

fn cond_spec() -> impl Strategy<Value = CondSpec> {
    prop_oneof![
        3 => Just(CondSpec::Always),
        1 => Just(CondSpec::IfAbsent),
        1 => Just(CondSpec::IfPresent),
        2 => prop::bool::weighted(0.25).prop_map(|wrong| CondSpec::CurrentVersion { wrong }),
    ]
}

fn ttl() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(-50i64..400)
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        6 => (0..KEYS.len(), 0usize..40, b'a'..=b'z', ttl(), cond_spec())
            .prop_map(|(key, len, fill, ttl, cond)| OpSpec::Set { key, len, fill, ttl, cond }),
        1 => (0..KEYS.len()).prop_map(|key| OpSpec::Delete { key }),
        2 => (0..KEYS.len(), ttl()).prop_map(|(key, ttl)| OpSpec::Expire { key, ttl }),
        2 => prop::collection::vec(0..KEYS.len(), 0..4).prop_map(|keys| OpSpec::Touch { keys }),
        1 => Just(OpSpec::Tick),
        1 => (prop::option::of(0u64..5), prop::option::of(prop_oneof![Just(0u64), 60u64..400]))
            .prop_map(|(max_entries, max_bytes)| OpSpec::Configure { max_entries, max_bytes }),
        1 => Just(OpSpec::Clear),
    ]
}

fn write_spec() -> impl Strategy<Value = WriteSpec> {
    prop_oneof![
        3 => Just(WriteSpec::Untagged),
        3 => (1..=CLIENTS, 0u64..4).prop_map(|(client, ack_lag)| WriteSpec::New { client, ack_lag }),
        2 => (1..=CLIENTS, 0u64..3).prop_map(|(client, back)| WriteSpec::Retry { client, back }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let dt = prop_oneof![20 => -100i64..300, 1 => Just(SESSION_IDLE_MS as i64 + 1)];
    (dt, 0u64..3, op_spec(), write_spec(), 0u64..200).prop_map(|(dt, index_gap, op, write, read_skew)| Step {
        dt,
        index_gap,
        op,
        write,
        read_skew,
    })
}

/// Turns steps into commands the way clients and proposers would: absolute expiry from the
/// proposer's clock, per-client sequence numbers, retries that resend the original command.
#[derive(Default)]
struct Proposer {
    now_ms: u64,
    index: LogIndex,
    last_seq: BTreeMap<u64, u64>,
    acked_below: BTreeMap<u64, u64>,
    sent: BTreeMap<(u64, u64), Command>,
}

impl Proposer {
    fn next(&mut self, step: &Step, model: &Model) -> (LogIndex, Command) {
        self.now_ms = self.now_ms.saturating_add_signed(step.dt);
        self.index += 1 + step.index_gap;
        let now_ms = self.now_ms;
        let at = |ttl: Option<i64>| ttl.map(|t| now_ms.saturating_add_signed(t));
        let op = match &step.op {
            OpSpec::Set { key, len, fill, ttl, cond } => Op::Set {
                key: KEYS[*key].to_string(),
                value: Bytes::from(vec![*fill; *len]),
                expires_at_ms: at(*ttl),
                condition: match cond {
                    CondSpec::Always => Condition::Always,
                    CondSpec::IfAbsent => Condition::IfAbsent,
                    CondSpec::IfPresent => Condition::IfPresent,
                    CondSpec::CurrentVersion { wrong } => {
                        // As a client would, from a read before proposing (the clock may pass
                        // the expiry in between).
                        let v = model.get(KEYS[*key], 0).map_or(0, |e| e.version);
                        Condition::IfVersion(v + u64::from(*wrong))
                    }
                },
            },
            OpSpec::Delete { key } => Op::Delete { key: KEYS[*key].to_string() },
            OpSpec::Expire { key, ttl } => Op::Expire { key: KEYS[*key].to_string(), expires_at_ms: at(*ttl) },
            OpSpec::Touch { keys } => Op::Touch { keys: keys.iter().map(|k| KEYS[*k].to_string()).collect() },
            OpSpec::Tick => Op::Tick,
            OpSpec::Configure { max_entries, max_bytes } => {
                Op::Configure { max_entries: *max_entries, max_bytes: *max_bytes }
            }
            OpSpec::Clear => Op::Clear,
        };
        let mut cmd = Command { now_ms, write_id: None, op };
        match step.write {
            WriteSpec::Untagged => {}
            WriteSpec::New { client, ack_lag } => {
                let seq = self.last_seq.get(&client).copied().unwrap_or(0) + 1;
                let acked = self.acked_below.entry(client).or_insert(0);
                *acked = (*acked).max(seq.saturating_sub(ack_lag));
                self.last_seq.insert(client, seq);
                cmd.write_id = Some(WriteId { client_id: client, seq, acked_below: *acked });
                self.sent.insert((client, seq), cmd.clone());
            }
            WriteSpec::Retry { client, back } => {
                let last = self.last_seq.get(&client).copied().unwrap_or(0);
                if let Some(sent) = last.checked_sub(back).and_then(|seq| self.sent.get(&(client, seq))) {
                    cmd = Command { now_ms, ..sent.clone() };
                }
            }
        }
        (self.index, cmd)
    }
}

fn round_trip(cache: &Cache) -> Cache {
    let bytes = bincode::serialize(&cache.snapshot()).expect("serialize snapshot");
    Cache::restore(bincode::deserialize(&bytes).expect("deserialize snapshot"))
}

fn check_against_model(cache: &Cache, model: &Model, read_at: u64) {
    let live: Vec<ModelEntry> = cache
        .live_entries_lru()
        .into_iter()
        .map(|(key, value, version, expires_at_ms)| ModelEntry { key, value, version, expires_at_ms })
        .collect();
    assert_eq!(live, model.live_entries(), "live entries in LRU order");
    assert_eq!(cache.len(), model.lru.len(), "stored entries");
    assert_eq!(cache.used_bytes(), model.used_bytes(), "used bytes");
    assert_eq!(cache.clock_ms(), model.clock_ms);
    assert_eq!(cache.limits(), model.limits);
    for key in KEYS {
        assert_eq!(cache.get(key, read_at), model.get(key, read_at), "get {key} at {read_at}");
    }
    for client in 1..=CLIENTS {
        let model_seqs: Vec<u64> =
            model.sessions.get(&client).map(|s| s.responses.iter().map(|(seq, _)| *seq).collect()).unwrap_or_default();
        assert_eq!(cache.sessions().stored_seqs(client), model_seqs, "client {client} responses");
    }
    cache.check_invariants();
}

fn run(steps: &[Step], split: usize) {
    let mut cache = Cache::new();
    let mut model = Model::default();
    let mut proposer = Proposer::default();
    let mut restored: Option<Cache> = None;
    for (n, step) in steps.iter().enumerate() {
        if n == split {
            restored = Some(round_trip(&cache));
        }
        let (index, cmd) = proposer.next(step, &model);
        let response = cache.apply(index, &cmd);
        assert_eq!(response, model.apply(index, &cmd), "step {n}: {cmd:?}");
        if let Some(r) = restored.as_mut() {
            assert_eq!(r.apply(index, &cmd), response, "restored cache, step {n}");
        }
        check_against_model(&cache, &model, proposer.now_ms + step.read_skew);
    }
    let restored = restored.unwrap_or_else(|| round_trip(&cache));
    assert_eq!(restored.state_hash(), cache.state_hash());
    assert_eq!(restored.dump(), cache.dump());
    assert_eq!(restored.snapshot(), cache.snapshot());
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    // 256 cases take well under a second in a debug build; `PROPTEST_CASES=100000` soaks.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn cache_matches_model_and_survives_restore(
        steps in prop::collection::vec(step(), 1..60),
        split in any::<Index>(),
    ) {
        let split = split.index(steps.len() + 1);
        run(&steps, split);
    }
}
