//! Workloads: what the clients do during a test, and the [`Recorder`] that turns it into a
//! [`history`](crate::history).
//!
//! Both workloads share one driver ([`RegisterConfig`] holds the settings they share):
//! `concurrency` worker processes each run one operation at a time, paced so that together they
//! invoke about `rate` operations per second. Each operation is chosen at random (a per-worker
//! [`StdRng`] seeded from the test's seed). Reads go to the worker's *home* replica only (a
//! client with that one endpoint and discovery off), so a replica cut off by a partition really
//! answers the reads it can: what a stale read level permits is then visible. Writes go through
//! a second client per worker that knows every node and follows the leader. Workers are spread
//! over the nodes round-robin for their home replicas.
//!
//! The clients speak gRPC or the Redis protocol ([`RegisterConfig::protocol`]); the worker
//! drives both the same way through one [`WorkloadClient`], which owns the connections and
//! decides whether an error is `fail` or `info` ([`crate::client`]). What is recorded, and so
//! what the checkers judge, does not depend on the protocol, with one exception: RESP exposes
//! no version to compare against, so under RESP the register workload does no cas (its mix
//! must give cas no weight; the CLI sets it so).
//!
//! The **register** workload ([`run_register`]) treats each key as a register:
//!
//! * **read**: `get_with` at the configured level, to the home replica;
//! * **write**: `set` of a value unique in the whole test (`p3-17`: process 3's 17th write);
//! * **cas**: a linearizable read (recorded as a read op of its own), then, if it answered,
//!   `set_with` on condition `IfVersion(version read)` (`IfAbsent` if the key was absent),
//!   recorded as `Cas { from: value read, to: new value }`. Because every value is written once,
//!   the key held `from` at the moment the write applied exactly when it still had the version
//!   read, so the condition is the CAS. Applied: `ok`; condition failed: `fail`.
//!
//! The **cache** workload ([`run_cache`]) treats each key as a cache entry that may expire
//! ([`CacheConfig`]):
//!
//! * **get**: as the register workload's read;
//! * **set**: a unique value with a TTL drawn uniformly from `ttl_min..=ttl_max` (whole ms), or,
//!   for `no_ttl_percent` of the sets, none; recorded as `Set { ttl_ms }`;
//! * **delete**: recorded as `Delete`, `ok` whether or not the key existed.
//!
//! TTLs are short (200 ms to 2 s by default) and keys many, so entries really expire between
//! writes and the checkers see reads of expired keys ([`crate::checker::ttl`]).
//!
//! **Read-your-writes.** When a worker's own write, cas, set or delete of a key is acknowledged,
//! the worker's next read of that key at its home replica (at the configured level) carries the
//! write's log index as `min_version`, and the read op records which write pinned it
//! ([`Op::Read`]'s `after`: the value written, or the delete's invocation index). Only `ok`
//! writes pin (an indeterminate one has no version); a newer own write of the key replaces the
//! pin, and a read uses it up. The cas's own read is never pinned. The checker
//! [`crate::checker::read_your_writes`] judges pinned reads from the history alone.
//!
//! Every call has a deadline (`timeout`, default 1 s), so a fault yields an indeterminate
//! operation instead of a stalled worker. An error whose outcome is unknown (a timeout, a broken
//! connection: see [`crate::client`] for each protocol's mapping) is recorded as `info`, never
//! `fail`; after an `info` the worker continues as a new process (id + the number of workers),
//! as in Jepsen, because the old operation may still take effect later.
//!
//! Keys are `k0`, `k1`, ...: `keys` of them are in use at a time; a key retires once it has
//! seen `ops_per_key` operations and a fresh one takes its place, so each key's history stays
//! small enough for the linearizability checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use geocache_client::ReadOptions;
use geocache_node::types::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;

// The final phase's reads (runner.rs) map their errors as the workload's gRPC reads do.
pub(crate) use crate::client::grpc_error_kind as error_kind;
use crate::client::{Failure, Protocol, WorkloadClient, Written};
use crate::history::{Event, EventKind, Op, Pin, Process, ReadLevel};

/// Records a history as it happens: one clock (an [`Instant`] taken when the test started),
/// indices in order, and running counts for the progress line.
///
/// Each event is stamped and numbered under one lock, so `time_ns` never decreases along the
/// history and `index` is the position.
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    counts: [AtomicU64; 4],
}

/// How many events of each kind were recorded so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

impl Recorder {
    /// An empty history whose clock starts at `start`.
    pub fn new(start: Instant) -> Recorder {
        Recorder { start, events: Mutex::default(), counts: Default::default() }
    }

    /// The test's clock: nanoseconds since `start`.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the test started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records that `process` invokes `op`; returns the invocation's index in the history.
    pub fn invoke(&self, process: Process, op: &Op) -> u64 {
        self.push(process, EventKind::Invoke, op.clone(), None)
    }

    /// Records the completion of `process`'s operation.
    pub fn complete(&self, process: Process, kind: EventKind, op: Op, error: Option<String>) {
        debug_assert!(kind != EventKind::Invoke);
        self.push(process, kind, op, error);
    }

    /// Counts so far.
    pub fn counts(&self) -> Counts {
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        Counts { invoked: c(0), ok: c(1), fail: c(2), info: c(3) }
    }

    /// A copy of the history so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    fn push(&self, process: Process, kind: EventKind, op: Op, error: Option<String>) -> u64 {
        let slot = match kind {
            EventKind::Invoke => 0,
            EventKind::Ok => 1,
            EventKind::Fail => 2,
            EventKind::Info => 3,
        };
        let mut events = self.lock();
        let event = Event { index: events.len() as u64, time_ns: self.now_ns(), process, kind, op, error };
        let index = event.index;
        events.push(event);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        index
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The settings every workload shares (pacing, workers, keys, deadlines, the read level), and
/// the register workload's mix. (Named for the first workload; the cache workload's own
/// settings are a [`CacheConfig`].)
#[derive(Clone, Debug, Serialize)]
pub struct RegisterConfig {
    /// Level of the reads the workload chooses (a cas's own read is always linearizable).
    pub read_level: ReadLevel,
    /// Operations invoked per second, all workers together.
    pub rate: f64,
    /// Worker processes, each with one operation in flight at a time.
    pub concurrency: usize,
    /// Keys in use at a time.
    pub keys: usize,
    /// Operations after which a key retires for a fresh one.
    pub ops_per_key: u64,
    /// Deadline of one client call.
    #[serde(serialize_with = "crate::report::human_duration")]
    pub timeout: Duration,
    /// Relative weights of read, write and cas (register workload).
    pub mix: [u32; 3],
    /// Seed of the operation choices.
    pub seed: u64,
    /// The nodes' port the clients speak to: gRPC, or the Redis protocol (no cas: see the
    /// module doc).
    pub protocol: Protocol,
    /// The cluster CA the clients trust when the nodes run with TLS (set once the cluster's
    /// certificates exist); `None`: plaintext.
    #[serde(skip)]
    pub tls_ca_pem: Option<Arc<[u8]>>,
}

impl Default for RegisterConfig {
    fn default() -> RegisterConfig {
        RegisterConfig {
            read_level: ReadLevel::Linearizable,
            rate: 100.0,
            concurrency: 5,
            keys: 5,
            ops_per_key: 200,
            timeout: Duration::from_secs(1),
            mix: [2, 1, 1],
            seed: 0,
            protocol: Protocol::Grpc,
            tls_ca_pem: None,
        }
    }
}

/// The cache workload's own settings (the shared ones are a [`RegisterConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CacheConfig {
    /// Relative weights of get, set and delete.
    pub mix: [u32; 3],
    /// Shortest TTL of a set (at least 1 ms).
    #[serde(serialize_with = "crate::report::human_duration")]
    pub ttl_min: Duration,
    /// Longest TTL of a set (at least `ttl_min`).
    #[serde(serialize_with = "crate::report::human_duration")]
    pub ttl_max: Duration,
    /// Percentage of sets without a TTL.
    pub no_ttl_percent: u32,
}

impl CacheConfig {
    /// Keys in use at a time when the flags do not say: enough that at the CLI's default rate
    /// (200/s, so 10/s per key, 4 in 15 of them sets) a key's sets come about 0.4 s apart, and
    /// many of the default TTLs (0.2 to 2 s) run out before the next set.
    pub const DEFAULT_KEYS: usize = 20;
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            mix: [10, 4, 1],
            ttl_min: Duration::from_millis(200),
            ttl_max: Duration::from_secs(2),
            no_ttl_percent: 20,
        }
    }
}

/// Parses a TTL range `MIN..MAX` (`200ms..2s`); both ends at least 1 ms, whole milliseconds,
/// and `MIN <= MAX`.
pub fn parse_ttl_range(s: &str) -> Result<(Duration, Duration), String> {
    let hint = "expected MIN..MAX, e.g. 200ms..2s";
    let (min, max) = s.split_once("..").ok_or_else(|| format!("bad TTL range {s:?}: {hint}"))?;
    let parse = |d: &str| -> Result<Duration, String> {
        let d = humantime::parse_duration(d.trim()).map_err(|e| format!("bad TTL {d:?} in {s:?}: {e}; {hint}"))?;
        if d < Duration::from_millis(1) || d.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!("TTL {d:?} in {s:?} must be a whole number of milliseconds, at least 1ms"));
        }
        Ok(d)
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max {
        return Err(format!("TTL range {s:?} is empty: the minimum is above the maximum"));
    }
    Ok((min, max))
}

/// The keys in use, and how many operations each has seen.
struct KeySpace {
    active: Vec<(u64, u64)>,
    next: u64,
    per_key: u64,
}

impl KeySpace {
    fn new(keys: usize, per_key: u64) -> KeySpace {
        let keys = keys.max(1) as u64;
        KeySpace { active: (0..keys).map(|k| (k, 0)).collect(), next: keys, per_key: per_key.max(1) }
    }

    /// A key for an operation that records `cost` operations (a cas records two: its read and
    /// itself); retires the key once it has seen `per_key` operations.
    fn pick(&mut self, rng: &mut StdRng, cost: u64) -> String {
        let slot = rng.gen_range(0..self.active.len());
        let (key, used) = &mut self.active[slot];
        let name = format!("k{key}");
        *used += cost;
        if *used >= self.per_key {
            self.active[slot] = (self.next, 0);
            self.next += 1;
        }
        name
    }
}

/// Picks one of three kinds of operation by their relative weights: 0, 1 or 2 (0 if every
/// weight is 0).
fn choose(rng: &mut StdRng, mix: [u32; 3]) -> usize {
    let total: u32 = mix.iter().sum();
    if total == 0 {
        return 0;
    }
    let roll = rng.gen_range(0..total);
    if roll < mix[0] {
        0
    } else if roll < mix[0] + mix[1] {
        1
    } else {
        2
    }
}

pub(crate) fn read_options(level: ReadLevel) -> ReadOptions {
    match level {
        ReadLevel::Linearizable => ReadOptions::linearizable(),
        ReadLevel::Bounded(ms) => ReadOptions::bounded(Duration::from_millis(ms.max(1))),
        ReadLevel::Stale => ReadOptions::stale(),
    }
}

/// Read-your-writes pins: per key, the log index of the worker's last acknowledged write (or
/// delete) of it, and which write that was. The next home read of the key takes it.
#[derive(Default)]
struct Pins(HashMap<String, (u64, Pin)>);

impl Pins {
    /// An own write of `key` was acknowledged as `written`: pin the next read to it. (Call only
    /// for `ok` writes; a write without a known version pins nothing.)
    fn acknowledged(&mut self, key: &str, written: Written, pin: Pin) {
        if written.version > 0 {
            self.0.insert(key.to_string(), (written.version, pin));
        }
    }

    /// The pin of the next read of `key`, used up.
    fn take(&mut self, key: &str) -> Option<(u64, Pin)> {
        self.0.remove(key)
    }
}

/// Which workload a worker runs, with its mix.
#[derive(Clone, Copy, Debug)]
enum Mix {
    /// Weights of read, write, cas.
    Register([u32; 3]),
    Cache(CacheConfig),
}

/// One worker: its process id (which changes after an `info`), its clients and its choices.
struct Worker {
    process: Process,
    concurrency: u64,
    writes: u64,
    /// Reads at the configured level from the home replica; writes, cas and the cas's read
    /// through the cluster.
    client: WorkloadClient,
    rng: StdRng,
    recorder: Arc<Recorder>,
    keys: Arc<Mutex<KeySpace>>,
    read_level: ReadLevel,
    mix: Mix,
    pins: Pins,
}

impl Worker {
    async fn run_one(&mut self) {
        match self.mix {
            Mix::Register(mix) => {
                let choice = choose(&mut self.rng, mix);
                let key = self.pick_key(if choice == 2 { 2 } else { 1 });
                match choice {
                    0 => self.read_home(key).await,
                    1 => self.write(key).await,
                    _ => self.cas(key).await,
                }
            }
            Mix::Cache(cache) => {
                let choice = choose(&mut self.rng, cache.mix);
                let key = self.pick_key(1);
                match choice {
                    0 => self.read_home(key).await,
                    1 => self.set(key, cache).await,
                    _ => self.delete(key).await,
                }
            }
        }
    }

    fn pick_key(&mut self, cost: u64) -> String {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).pick(&mut self.rng, cost)
    }

    /// A read at the configured level from the home replica, pinned with `min_version` to the
    /// worker's last acknowledged write of the key if it has not read the key since.
    async fn read_home(&mut self, key: String) {
        let pin = self.pins.take(&key);
        let (min_version, after) = match pin {
            Some((version, pin)) => (Some(version), Some(pin)),
            None => (None, None),
        };
        let level = self.read_level;
        let op = Op::Read { key: key.clone(), level, value: None, after: after.clone() };
        self.recorder.invoke(self.process, &op);
        match self.client.read(&key, min_version).await {
            Ok(value) => {
                self.recorder.complete(self.process, EventKind::Ok, Op::Read { key, level, value, after }, None)
            }
            Err(f) => self.fail(op, f),
        }
    }

    async fn write(&mut self, key: String) {
        let value = self.next_value();
        let op = Op::Write { key: key.clone(), value: value.clone() };
        self.recorder.invoke(self.process, &op);
        match self.client.set(&key, &value, None).await {
            Ok(w) => {
                self.recorder.complete(self.process, EventKind::Ok, op, None);
                self.pins.acknowledged(&key, w, Pin::Value(value));
            }
            Err(f) => self.fail(op, f),
        }
    }

    /// A linearizable read through the cluster (recorded as a read op of its own, never pinned),
    /// then, if it answered, a write of a fresh value conditioned on the version read.
    async fn cas(&mut self, key: String) {
        let level = ReadLevel::Linearizable;
        let read_op = Op::Read { key: key.clone(), level, value: None, after: None };
        self.recorder.invoke(self.process, &read_op);
        let read = match self.client.read_versioned(&key).await {
            Ok(read) => read,
            Err(f) => return self.fail(read_op, f), // nothing to compare with
        };
        let value = read.as_ref().map(|(v, _)| v.clone());
        self.recorder.complete(
            self.process,
            EventKind::Ok,
            Op::Read { key: key.clone(), level, value, after: None },
            None,
        );
        let to = self.next_value();
        let (from, version) = match read {
            Some((value, version)) => (Some(value), Some(version)),
            None => (None, None),
        };
        let op = Op::Cas { key: key.clone(), from, to: to.clone() };
        self.recorder.invoke(self.process, &op);
        match self.client.set_if_version(&key, &to, version).await {
            Ok(Some(w)) => {
                self.recorder.complete(self.process, EventKind::Ok, op, None);
                self.pins.acknowledged(&key, w, Pin::Value(to));
            }
            Ok(None) => self.fail(op, Failure::fail("condition did not hold")),
            Err(f) => self.fail(op, f),
        }
    }

    /// A set of a fresh value, with a TTL drawn from the configured range (or, sometimes, none).
    /// The invocation is recorded before the request leaves, so the node stamps the expiry no
    /// earlier than the invocation's time: what the TTL checker relies on.
    async fn set(&mut self, key: String, cache: CacheConfig) {
        let value = self.next_value();
        let ttl_ms = (self.rng.gen_range(0..100) >= cache.no_ttl_percent).then(|| {
            let (min, max) = (cache.ttl_min.as_millis() as u64, cache.ttl_max.as_millis() as u64);
            self.rng.gen_range(min.max(1)..=max.max(min).max(1))
        });
        let op = Op::Set { key: key.clone(), value: value.clone(), ttl_ms };
        self.recorder.invoke(self.process, &op);
        match self.client.set(&key, &value, ttl_ms.map(Duration::from_millis)).await {
            Ok(w) => {
                self.recorder.complete(self.process, EventKind::Ok, op, None);
                self.pins.acknowledged(&key, w, Pin::Value(value));
            }
            Err(f) => self.fail(op, f),
        }
    }

    /// A delete: `ok` whether or not the key existed (it is gone either way).
    async fn delete(&mut self, key: String) {
        let op = Op::Delete { key: key.clone() };
        let invoked = self.recorder.invoke(self.process, &op);
        match self.client.delete(&key).await {
            Ok(w) => {
                self.recorder.complete(self.process, EventKind::Ok, op, None);
                self.pins.acknowledged(&key, w, Pin::Delete(invoked));
            }
            Err(f) => self.fail(op, f),
        }
    }

    /// Completes `op` as `failure` says (`fail` or `info`).
    fn fail(&mut self, op: Op, failure: Failure) {
        let kind = failure.kind;
        self.recorder.complete(self.process, kind, op, Some(failure.message));
        if kind == EventKind::Info {
            // The operation may still take effect: this process stays "in flight" forever.
            self.process += self.concurrency;
        }
    }

    /// A value no other write in the test uses.
    fn next_value(&mut self) -> String {
        self.writes += 1;
        format!("p{}-{}", self.process, self.writes)
    }
}

/// Runs the register workload against the nodes at `endpoints` (`(id, address)`) until `stop`
/// turns true, recording into `recorder`. Every worker finishes the operation it has in flight
/// (each call is bounded by the configured timeout) before this returns. Errors only if a
/// client cannot be built (bad configuration): a harness error.
pub async fn run_register(
    config: RegisterConfig,
    endpoints: Vec<(NodeId, String)>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let mix = Mix::Register(config.mix);
    run_workers(config, mix, endpoints, recorder, stop).await
}

/// Runs the cache workload (get, set with TTL, delete; see the module doc) with the shared
/// settings of `config` and the cache's own of `cache`, as [`run_register`] runs the register
/// workload.
pub async fn run_cache(
    config: RegisterConfig,
    cache: CacheConfig,
    endpoints: Vec<(NodeId, String)>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    anyhow::ensure!(
        cache.ttl_min >= Duration::from_millis(1) && cache.ttl_min <= cache.ttl_max,
        "the TTL range must be at least 1ms and not empty (got {:?}..{:?})",
        cache.ttl_min,
        cache.ttl_max
    );
    anyhow::ensure!(cache.no_ttl_percent <= 100, "the share of sets without TTL is a percentage");
    run_workers(config, Mix::Cache(cache), endpoints, recorder, stop).await
}

/// The driver both workloads share: builds each worker's clients, then runs the paced workers
/// until `stop`.
async fn run_workers(
    config: RegisterConfig,
    mix: Mix,
    endpoints: Vec<(NodeId, String)>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    anyhow::ensure!(!endpoints.is_empty(), "no nodes to run the workload against");
    anyhow::ensure!(config.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(config.rate > 0.0 && config.rate.is_finite(), "--rate must be positive");
    if let Mix::Register([_, _, cas]) = mix {
        anyhow::ensure!(
            cas == 0 || config.protocol.supports_cas(),
            "the register workload cannot cas over {} (no versions to compare): give cas no weight",
            config.protocol.name()
        );
    }
    let all: Vec<String> = endpoints.iter().map(|(_, a)| a.clone()).collect();
    let keys = Arc::new(Mutex::new(KeySpace::new(config.keys, config.ops_per_key)));
    // Each worker invokes every `period`, so all together invoke `rate` per second.
    let period = Duration::from_secs_f64(config.concurrency as f64 / config.rate);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..config.concurrency {
        let home = w % endpoints.len();
        let client = WorkloadClient::connect(
            config.protocol,
            &all,
            home,
            config.read_level,
            config.timeout,
            config.tls_ca_pem.as_deref(),
        )
        .await?;
        let mut worker = Worker {
            process: w as Process,
            concurrency: config.concurrency as u64,
            writes: 0,
            client,
            rng: StdRng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(w as u64)),
            recorder: recorder.clone(),
            keys: keys.clone(),
            read_level: config.read_level,
            mix,
            pins: Pins::default(),
        };
        let mut stop = stop.clone();
        tasks.spawn(async move {
            // Spread the workers' first invocations over one period.
            let offset = period.mul_f64(worker.rng.gen_range(0.0..1.0));
            let mut next = tokio::time::Instant::now() + offset;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                if *stop.borrow() {
                    break;
                }
                worker.run_one().await;
                // Paced, without bursts to catch up after a slow operation.
                next = (next + period).max(tokio::time::Instant::now());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a workload worker panicked")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_retire_after_their_share_of_operations() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut keys = KeySpace::new(2, 3);
        let mut seen = std::collections::BTreeMap::<String, u64>::new();
        for _ in 0..30 {
            *seen.entry(keys.pick(&mut rng, 1)).or_default() += 1;
        }
        assert!(seen.values().all(|n| *n <= 3), "{seen:?}");
        // Retired keys saw exactly 3; only the two still in use may have seen fewer.
        assert!(seen.values().filter(|n| **n < 3).count() <= 2, "{seen:?}");
        assert!(seen.len() >= 10, "{seen:?}");
        // A cas counts twice.
        let mut keys = KeySpace::new(1, 3);
        assert_eq!(keys.pick(&mut rng, 2), "k0");
        assert_eq!(keys.pick(&mut rng, 2), "k0");
        assert_eq!(keys.pick(&mut rng, 2), "k1");
    }

    #[test]
    fn the_mix_is_respected_and_seeded() {
        let mut rng = StdRng::seed_from_u64(7);
        let picks: Vec<usize> = (0..1000).map(|_| choose(&mut rng, [2, 1, 1])).collect();
        let reads = picks.iter().filter(|c| **c == 0).count();
        assert!((400..600).contains(&reads), "{reads} reads of 1000");
        let mut again = StdRng::seed_from_u64(7);
        let replay: Vec<usize> = (0..1000).map(|_| choose(&mut again, [2, 1, 1])).collect();
        assert_eq!(picks, replay);
        assert!((0..100).all(|_| choose(&mut rng, [0, 0, 1]) == 2));
        assert!((0..100).all(|_| choose(&mut rng, [0, 0, 0]) == 0));
    }

    #[test]
    fn ttl_ranges_parse() {
        let ms = Duration::from_millis;
        assert_eq!(parse_ttl_range("200ms..2s").unwrap(), (ms(200), ms(2000)));
        assert_eq!(parse_ttl_range("1s..1s").unwrap(), (ms(1000), ms(1000)));
        assert_eq!(parse_ttl_range(" 5ms .. 10ms ").unwrap(), (ms(5), ms(10)));
        for bad in ["200ms", "2s..200ms", "0ms..1s", "1500us..2s", "x..1s", "1s.."] {
            assert!(parse_ttl_range(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_recorder_numbers_and_counts_events() {
        let recorder = Recorder::new(Instant::now());
        let op = Op::Write { key: "k".into(), value: "v".into() };
        recorder.invoke(3, &op);
        recorder.complete(3, EventKind::Info, op.clone(), Some("timeout".into()));
        recorder.invoke(8, &op);
        recorder.complete(8, EventKind::Ok, op, None);
        let events = recorder.events();
        assert_eq!(events.iter().map(|e| e.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        assert_eq!(recorder.counts(), Counts { invoked: 2, ok: 1, fail: 0, info: 1 });
    }

    #[test]
    fn an_acknowledged_write_pins_the_next_read_of_its_key_once() {
        let written = |version| Written { version };
        let mut pins = Pins::default();
        pins.acknowledged("a", written(7), Pin::Value("p0-1".into()));
        pins.acknowledged("a", written(9), Pin::Value("p0-2".into())); // a newer own write
        pins.acknowledged("b", written(11), Pin::Delete(40));
        pins.acknowledged("c", written(0), Pin::Value("p0-3".into())); // no version: no pin
        assert_eq!(pins.take("a"), Some((9, Pin::Value("p0-2".into()))));
        assert_eq!(pins.take("a"), None, "a pin is used up by one read");
        assert_eq!(pins.take("b"), Some((11, Pin::Delete(40))));
        assert_eq!(pins.take("c"), None);
    }
}
