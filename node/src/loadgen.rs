//! The load engine behind `geocache bench` and the side-by-side comparison
//! (`benches/compare/`): it drives any key-value store through a small [`Backend`] trait, so
//! geocache, etcd and Redis are measured by the same loop, the same key choice and the same
//! histograms.
//!
//! Owns: the operation mix ([`Workload`]), how keys are drawn ([`KeyDist`]) and named
//! (`bench:` and ten digits, see [`key`]), closed and open loop, the preload that writes every
//! key once ([`preload`]), per-client histograms merged at the end, the progress line, and the
//! figures of a run ([`Report`]). Refuses to own: connections, consistency levels, TTLs and
//! what an error means; a backend decides those. [`GeocacheBackend`] is geocache's, over
//! `geocache-client`; the comparison brings its own for etcd and Redis.
//!
//! Invariants:
//! * One task per backend given to [`run`], each with one operation in flight: the number of
//!   backends is the number of clients.
//! * Closed loop: a latency is from the call to its answer. Open loop ([`Plan::rate`]): an
//!   operation is due at a fixed time, and its latency counts from then, not from when it was
//!   sent, so a stall shows as latency rather than as operations that never happened (no
//!   coordinated omission).
//! * Latencies are in microseconds, 1 us to 10 min, 3 significant digits; a longer one is
//!   recorded as 10 min. Only successful operations enter the histograms; errors are counted
//!   by the kind their backend names.
//! * The same [`Plan::seed`] gives every backend the same sequence of keys and operations.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use geocache_client::{Client, ReadOptions, SetOptions};
use hdrhistogram::Histogram;
use rand::distributions::Distribution;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// One client's connection to the store under test. The engine clones it into one task per
/// client; whether clones share a connection is the backend's choice.
pub trait Backend: Clone + Send + Sync + 'static {
    /// What a failed operation reports.
    type Error: std::fmt::Display + Send;

    /// Stores `value` under `key`.
    fn set(&self, key: String, value: Bytes) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reads `key`; `true` if it was found.
    fn get(&self, key: String) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// A short, stable name for the kind of `error` (`timeout`, `unavailable`, ...): errors
    /// are counted by it.
    fn error_kind(error: &Self::Error) -> &'static str;
}

/// The mix of operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    Write,
    Read,
    /// Reads with this probability, writes otherwise.
    Mixed(f64),
}

impl FromStr for Workload {
    type Err = String;

    /// `write`, `read` or `mixed:R` with R the fraction of reads.
    fn from_str(s: &str) -> Result<Workload, String> {
        match s {
            "write" => Ok(Workload::Write),
            "read" => Ok(Workload::Read),
            _ => {
                let ratio = s.strip_prefix("mixed:").ok_or("expected write, read or mixed:R (e.g. mixed:0.9)")?;
                let ratio: f64 = ratio.parse().map_err(|_| format!("bad read fraction {ratio:?}"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err("the read fraction of mixed:R must be between 0 and 1".into());
                }
                Ok(Workload::Mixed(ratio))
            }
        }
    }
}

/// How keys are drawn from `0..keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDist {
    Uniform,
    /// Zipf with exponent 1: a few keys are hot.
    Zipfian,
}

/// The name of key number `i`: the same for every backend, so every store holds the same data.
pub fn key(i: u64) -> String {
    format!("bench:{i:010}")
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// What the report calls the workload (e.g. `read (stale)`).
    pub name: String,
    pub workload: Workload,
    /// How long to run; ignored with `fill`, which stops when it is done.
    pub duration: Duration,
    /// Open loop: this many operations per second over all clients. `None`: closed loop.
    pub rate: Option<f64>,
    /// Bytes per written value.
    pub value_size: usize,
    /// Distinct keys the workload draws from (at least 1).
    pub keys: u64,
    pub key_dist: KeyDist,
    /// Write keys `0..n` once each (spread over the clients), then stop.
    pub fill: Option<u64>,
    /// Seed of the key and operation choices.
    pub seed: u64,
    /// `Some(prefix)`: print a progress line to stderr every second, starting with `prefix`.
    pub progress: Option<String>,
}

impl Plan {
    /// A closed-loop `workload` for `duration` over 10,000 uniform keys, 100-byte values, seed
    /// 0, with a progress line.
    pub fn new(name: impl Into<String>, workload: Workload, duration: Duration) -> Plan {
        Plan {
            name: name.into(),
            workload,
            duration,
            rate: None,
            value_size: 100,
            keys: 10_000,
            key_dist: KeyDist::Uniform,
            fill: None,
            seed: 0,
            progress: Some(String::new()),
        }
    }
}

/// What the engine can fail with (a failed operation during a run is not a failure: it is
/// counted in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plan cannot be run as given.
    #[error("{0}")]
    InvalidPlan(String),
    /// A write of [`preload`] failed; the store does not hold every key.
    #[error("preload: writing {key} failed: {message}")]
    Preload {
        /// The key not written.
        key: String,
        /// The backend's error.
        message: String,
    },
    /// A client task panicked or was cancelled.
    #[error("a client task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What one client task measured.
struct ClientTally {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    read_misses: u64,
    errors: BTreeMap<&'static str, u64>,
    first_errors: BTreeMap<&'static str, String>,
}

impl ClientTally {
    fn new() -> ClientTally {
        // 1 us to 10 min, 3 significant digits.
        let histogram = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        ClientTally {
            reads: histogram(),
            writes: histogram(),
            read_misses: 0,
            errors: BTreeMap::new(),
            first_errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: ClientTally) {
        let _ = self.reads.add(&other.reads);
        let _ = self.writes.add(&other.writes);
        self.read_misses += other.read_misses;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, message) in other.first_errors {
            self.first_errors.entry(kind).or_insert(message);
        }
    }
}

/// Shared between the clients and the progress line.
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
}

fn check_plan(clients: usize, plan: &Plan) -> Result<(), LoadError> {
    if clients == 0 {
        return Err(LoadError::InvalidPlan("at least one client (backend) is needed".into()));
    }
    if plan.keys == 0 {
        return Err(LoadError::InvalidPlan("at least one key is needed".into()));
    }
    if plan.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(LoadError::InvalidPlan("the rate must be a positive number of operations per second".into()));
    }
    Ok(())
}

/// Runs `plan` with one client task per backend and returns what they measured.
pub async fn run<B: Backend>(backends: &[B], plan: &Plan) -> Result<Report, LoadError> {
    check_plan(backends.len(), plan)?;
    let clients = backends.len();
    let value = Bytes::from(vec![b'v'; plan.value_size]);
    let progress = Arc::new(Progress { done: AtomicU64::new(0), errors: AtomicU64::new(0) });
    let started = Instant::now();
    let stop_at = started + plan.duration;
    let per_second = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reporter =
        tokio::spawn(report_progress(progress.clone(), per_second.clone(), plan.fill, plan.progress.clone()));
    let fill_next = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::with_capacity(clients);
    for (c, backend) in backends.iter().enumerate() {
        let backend = backend.clone();
        let value = value.clone();
        let progress = progress.clone();
        let fill_next = fill_next.clone();
        let (workload, keys, key_dist, fill, rate) = (plan.workload, plan.keys, plan.key_dist, plan.fill, plan.rate);
        let seed = plan.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let zipf = rand_distr::Zipf::new(keys, 1.0).expect("zipf over at least one key");
            let mut tally = ClientTally::new();
            // Open loop: this client's operations are due every `clients / rate` seconds,
            // offset so the clients interleave.
            let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
            let mut due = started + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / clients as f64));
            loop {
                let key_index = match fill {
                    Some(n) => match fill_next.fetch_add(1, Ordering::Relaxed) {
                        i if i < n => i,
                        _ => break,
                    },
                    // Open loop: stop at the first operation due after the end.
                    None if interval.is_some() && due >= stop_at => break,
                    None if Instant::now() >= stop_at => break,
                    None => match key_dist {
                        KeyDist::Uniform => rng.gen_range(0..keys),
                        KeyDist::Zipfian => (zipf.sample(&mut rng) as u64).saturating_sub(1).min(keys - 1),
                    },
                };
                if interval.is_some() {
                    tokio::time::sleep_until(due).await;
                }
                let op_started = if interval.is_some() { due } else { Instant::now() };
                let key = key(key_index);
                let is_read = fill.is_none()
                    && match workload {
                        Workload::Write => false,
                        Workload::Read => true,
                        Workload::Mixed(ratio) => rng.gen_bool(ratio),
                    };
                let result = if is_read {
                    backend.get(key).await.map(|found| {
                        if !found {
                            tally.read_misses += 1;
                        }
                    })
                } else {
                    backend.set(key, value.clone()).await
                };
                let micros = op_started.elapsed().as_micros().max(1) as u64;
                match result {
                    Ok(()) => {
                        let histogram = if is_read { &mut tally.reads } else { &mut tally.writes };
                        let _ = histogram.record(micros.min(histogram.high()));
                    }
                    Err(e) => {
                        let kind = B::error_kind(&e);
                        *tally.errors.entry(kind).or_default() += 1;
                        tally.first_errors.entry(kind).or_insert_with(|| e.to_string());
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
                if let Some(interval) = interval {
                    due += interval;
                }
            }
            tally
        }));
    }
    let mut total = ClientTally::new();
    let mut failed = None;
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            // Keep awaiting the others: none may outlive the run.
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    let elapsed = started.elapsed();
    reporter.abort();
    if plan.progress.is_some() {
        eprintln!();
    }
    if let Some(e) = failed {
        return Err(LoadError::Task(e));
    }
    let series = per_second.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report::new(plan.name.clone(), &total, elapsed, &series))
}

/// Writes keys `0..keys` (see [`key`]) once each with `value_size`-byte values, one task per
/// backend, and fails at the first write that fails: reads that follow should hit.
pub async fn preload<B: Backend>(backends: &[B], keys: u64, value_size: usize) -> Result<(), LoadError> {
    if backends.is_empty() {
        return Err(LoadError::InvalidPlan("at least one client (backend) is needed".into()));
    }
    let value = Bytes::from(vec![b'v'; value_size]);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), LoadError>>> = Vec::new();
    for backend in backends {
        let (backend, value, next) = (backend.clone(), value.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok(());
                }
                let key = key(i);
                if let Err(e) = backend.set(key.clone(), value.clone()).await {
                    return Err(LoadError::Preload { key, message: e.to_string() });
                }
            }
        }));
    }
    let mut outcome = Ok(());
    for task in tasks {
        let result = task.await.map_err(LoadError::from).and_then(|r| r);
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// Prints a progress line (if asked) every second and keeps the completed operations per second.
async fn report_progress(
    progress: Arc<Progress>,
    per_second: Arc<Mutex<Vec<u64>>>,
    fill: Option<u64>,
    prefix: Option<String>,
) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    loop {
        ticks.tick().await;
        let done = progress.done.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        per_second.lock().unwrap_or_else(|e| e.into_inner()).push(done - last);
        if let Some(prefix) = &prefix {
            let of = fill.map(|n| format!(" of {n}")).unwrap_or_default();
            eprint!(
                "\r{prefix}{:>5}s  {done}{of} ops  {} ops/s  {errors} errors   ",
                started.elapsed().as_secs(),
                done - last
            );
        }
        last = done;
    }
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The plan's name.
    pub workload: String,
    pub elapsed: Duration,
    /// `("write", ..)` and/or `("read", ..)`, for the kinds that had a success.
    pub rows: Vec<(&'static str, Row)>,
    /// Failed operations by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// The first message of each error kind.
    pub first_errors: BTreeMap<&'static str, String>,
    /// Successful reads that found no value.
    pub read_misses: u64,
    /// Completed operations per second in the first and the last quarter of the run (at most
    /// 10 s each): whether the rate held.
    pub first_rate: f64,
    pub last_rate: f64,
}

/// One kind of operation's figures.
#[derive(Clone, Debug)]
pub struct Row {
    /// Successful operations.
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Row {
    fn of(h: &Histogram<u64>, elapsed: Duration) -> Row {
        let ms = |us: u64| us as f64 / 1000.0;
        Row {
            ops: h.len(),
            ops_per_s: h.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

impl Report {
    fn new(workload: String, total: &ClientTally, elapsed: Duration, series: &[u64]) -> Report {
        let mut rows = Vec::new();
        if !total.writes.is_empty() {
            rows.push(("write", Row::of(&total.writes, elapsed)));
        }
        if !total.reads.is_empty() {
            rows.push(("read", Row::of(&total.reads, elapsed)));
        }
        let window = (series.len() / 4).clamp(1, 10);
        let mean = |s: &[u64]| if s.is_empty() { 0.0 } else { s.iter().sum::<u64>() as f64 / s.len() as f64 };
        let first_rate = mean(&series[..window.min(series.len())]);
        let last_rate = mean(&series[series.len().saturating_sub(window)..]);
        Report {
            workload,
            elapsed,
            rows,
            errors: total.errors.clone(),
            first_errors: total.first_errors.clone(),
            read_misses: total.read_misses,
            first_rate,
            last_rate,
        }
    }

    /// The figures of `op` (`"write"` or `"read"`), if any succeeded.
    pub fn row(&self, op: &str) -> Option<&Row> {
        self.rows.iter().find(|(o, _)| *o == op).map(|(_, r)| r)
    }

    /// Failed operations of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report as `geocache bench` prints it.
    pub fn table(&self) -> String {
        let mut out = format!("workload: {}   elapsed: {:.1}s\n", self.workload, self.elapsed.as_secs_f64());
        out.push_str(&format!(
            "{:<6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "ops", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
        ));
        for (op, r) in &self.rows {
            out.push_str(&format!(
                "{op:<6} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                r.ops, r.ops_per_s, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms
            ));
        }
        let detail: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!(
            "errors: {}{}\n",
            self.error_count(),
            if detail.is_empty() { String::new() } else { format!(" ({})", detail.join(", ")) }
        ));
        out.push_str(&format!(
            "rate: first {:.0} ops/s, last {:.0} ops/s (completed per second, first and last quarter of the run)\n",
            self.first_rate, self.last_rate
        ));
        out
    }

    /// The report as `geocache bench --json` prints it.
    pub fn json(&self) -> serde_json::Value {
        let rows: serde_json::Map<String, serde_json::Value> =
            self.rows.iter().map(|(op, r)| (op.to_string(), r.json())).collect();
        serde_json::json!({
            "workload": self.workload,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ops": rows,
            "errors": self.errors,
            "first_rate_ops_per_s": self.first_rate,
            "last_rate_ops_per_s": self.last_rate,
        })
    }
}

impl Row {
    /// `{"ops", "ops_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.ops, "ops_per_s": self.ops_per_s, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms, "max_ms": self.max_ms,
        })
    }
}

/// geocache through `geocache-client`: what an application sees (routing, retries, the wire).
/// Clones share the client's channels; give each client task its own [`Client`] for its own
/// connections.
#[derive(Clone, Debug)]
pub struct GeocacheBackend {
    client: Client,
    read: ReadOptions,
    write: SetOptions,
}

impl GeocacheBackend {
    /// Reads through `client` with `read`, writes with `write` (e.g. a TTL).
    pub fn new(client: Client, read: ReadOptions, write: SetOptions) -> GeocacheBackend {
        GeocacheBackend { client, read, write }
    }
}

impl Backend for GeocacheBackend {
    type Error = geocache_client::Error;

    async fn set(&self, key: String, value: Bytes) -> Result<(), Self::Error> {
        self.client.set_with(key, value, self.write).await.map(|_| ())
    }

    async fn get(&self, key: String) -> Result<bool, Self::Error> {
        self.client.get_with(key, self.read).await.map(|entry| entry.is_some())
    }

    fn error_kind(e: &Self::Error) -> &'static str {
        use geocache_client::Error;
        match e {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::NotFound(_) => "not_found",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::Rejected(_) => "rejected",
            Error::Decode(_) => "decode",
            Error::Loader(_) => "loader",
            Error::Unavailable { .. } => "unavailable",
            Error::StaleReplica { .. } => "stale_replica",
            Error::Transport(_) => "transport",
            Error::Timeout(_) => "timeout",
            Error::Internal(_) => "internal",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse() {
        assert_eq!("write".parse(), Ok(Workload::Write));
        assert_eq!("read".parse(), Ok(Workload::Read));
        assert_eq!("mixed:0.9".parse(), Ok(Workload::Mixed(0.9)));
        assert!("mixed:1.5".parse::<Workload>().is_err());
        assert!("scan".parse::<Workload>().is_err());
    }

    #[test]
    fn a_report_keeps_percentiles_and_the_rate_at_both_ends() {
        let mut tally = ClientTally::new();
        for us in 1..=1000 {
            tally.writes.record(us * 10).unwrap();
        }
        tally.errors.insert("timeout", 2);
        let report = Report::new("write".into(), &tally, Duration::from_secs(10), &[100, 100, 50, 50, 50, 50, 50, 10]);
        let row = report.row("write").unwrap();
        assert_eq!(row.ops, 1000);
        assert!((row.p50_ms - 5.0).abs() < 0.01, "{}", row.p50_ms);
        assert!((row.p99_ms - 9.9).abs() < 0.02, "{}", row.p99_ms);
        assert!(report.row("read").is_none());
        assert_eq!(report.first_rate, 100.0);
        assert_eq!(report.last_rate, 30.0);
        assert!(report.table().contains("errors: 2 (timeout 2)"), "{}", report.table());
        assert_eq!(report.json()["ops"]["write"]["ops"], 1000);
    }

    /// An in-memory store whose every tenth write fails: enough to check the loop's accounting
    /// without a server.
    #[derive(Clone, Default)]
    struct Memory {
        map: Arc<Mutex<BTreeMap<String, Bytes>>>,
        writes: Arc<AtomicU64>,
    }

    impl Backend for Memory {
        type Error = String;

        async fn set(&self, key: String, value: Bytes) -> Result<(), String> {
            if self.writes.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
                return Err(format!("refused {key}"));
            }
            self.map.lock().unwrap().insert(key, value);
            Ok(())
        }

        async fn get(&self, key: String) -> Result<bool, String> {
            Ok(self.map.lock().unwrap().contains_key(&key))
        }

        fn error_kind(_: &String) -> &'static str {
            "refused"
        }
    }

    #[tokio::test]
    async fn a_fill_writes_each_key_once_and_counts_what_failed() {
        let store = Memory::default();
        let mut plan = Plan::new("fill", Workload::Write, Duration::ZERO);
        plan.fill = Some(100);
        plan.progress = None;
        let report = run(&vec![store.clone(); 4], &plan).await.unwrap();
        assert_eq!(store.writes.load(Ordering::Relaxed), 100);
        assert_eq!(report.row("write").unwrap().ops, 90);
        assert_eq!(report.errors.get("refused"), Some(&10));
        assert!(report.first_errors["refused"].starts_with("refused bench:"), "{:?}", report.first_errors);
        assert_eq!(store.map.lock().unwrap().len(), 90);
    }

    #[tokio::test]
    async fn reads_after_a_preload_hit_and_a_failed_preload_says_which_key() {
        let store = Memory::default();
        // Writes 1-9 succeed and the 10th (key 9) fails.
        let err = preload(&[store], 20, 8).await.unwrap_err();
        assert!(matches!(&err, LoadError::Preload { key, .. } if key == "bench:0000000009"), "{err}");

        let store = Memory::default();
        for i in 0..50 {
            store.map.lock().unwrap().insert(key(i), Bytes::new());
        }
        let mut plan = Plan::new("read", Workload::Read, Duration::from_millis(100));
        plan.keys = 60;
        plan.progress = None;
        let report = run(&vec![store; 2], &plan).await.unwrap();
        let reads = report.row("read").unwrap().ops;
        assert!(reads > 0);
        assert!(report.read_misses > 0 && report.read_misses < reads, "10 of 60 keys are missing: {report:?}");
    }

    #[tokio::test]
    async fn a_plan_without_clients_or_keys_is_refused() {
        let plan = Plan::new("none", Workload::Write, Duration::ZERO);
        assert!(matches!(run::<Memory>(&[], &plan).await, Err(LoadError::InvalidPlan(_))));
        let mut plan = plan;
        plan.keys = 0;
        assert!(matches!(run(&[Memory::default()], &plan).await, Err(LoadError::InvalidPlan(_))));
    }
}
