//! `geocache bench`: a load generator for any running cluster, built on `geocache-client` (so it
//! measures what an application sees: routing, retries, the wire).
//!
//! Closed loop by default: `--clients` tasks, each with one operation in flight. With `--rate`
//! it is open loop: operations are due at fixed intervals (spread over the clients), and each
//! latency counts from when its operation was due, not when it was sent, so a stall shows up as
//! latency instead of as fewer operations (no coordinated omission). `--fill N` writes N
//! distinct keys once and stops. Latencies go into `hdrhistogram`s (microseconds, 3 significant
//! digits), one per client, merged at the end; a progress line goes to stderr every second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use geocache_client::{Client, Error, ReadOptions, SetOptions};
use hdrhistogram::Histogram;
use rand::distributions::Distribution;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{parse_duration, ConsistencyArg, Target};

/// Flags of `geocache bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub target: Target,
    /// What to do: `write`, `read`, or `mixed:R` with R the fraction of reads (e.g. mixed:0.9).
    #[arg(long, default_value = "write", value_parser = parse_workload)]
    pub workload: Workload,
    /// Read level of the reads.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
    pub consistency: ConsistencyArg,
    /// For `--consistency bounded`: the largest staleness accepted.
    #[arg(long, value_parser = parse_duration, required_if_eq("consistency", "bounded"))]
    pub max_staleness: Option<Duration>,
    /// Concurrent clients (tasks sharing one `geocache-client`), each with one operation in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to run (ignored with --fill, which stops when it is done).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop: this many operations per second in all, latency counted from each one's due time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys the workload draws from.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,
    /// TTL of written values (none by default).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Write this many distinct keys once (spread over the clients), then stop.
    #[arg(long)]
    pub fill: Option<u64>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The mix of operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    Write,
    Read,
    /// Reads with this probability, writes otherwise.
    Mixed(f64),
}

/// How keys are drawn from `0..keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyDist {
    Uniform,
    /// Zipf with exponent 1: a few keys are hot.
    Zipfian,
}

fn parse_workload(s: &str) -> Result<Workload, String> {
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

/// What one client task measured.
struct ClientTally {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
}

impl ClientTally {
    fn new() -> ClientTally {
        // 1 us to 10 min, 3 significant digits.
        let histogram = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        ClientTally { reads: histogram(), writes: histogram(), errors: BTreeMap::new() }
    }

    fn merge(&mut self, other: ClientTally) {
        let _ = self.reads.add(&other.reads);
        let _ = self.writes.add(&other.writes);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// The error's kind, for counting.
fn kind(e: &Error) -> &'static str {
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
    }
}

/// Shared between the clients and the progress line.
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
}

/// Runs `geocache bench`; returns the exit code.
pub(super) async fn run(args: BenchArgs) -> i32 {
    match bench(args).await {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("geocache bench: {message}");
            2
        }
    }
}

async fn bench(args: BenchArgs) -> Result<(), String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number of operations per second".into());
    }
    let read_options = match (args.consistency, args.max_staleness) {
        (ConsistencyArg::Linearizable, _) => ReadOptions::linearizable(),
        (ConsistencyArg::Bounded, Some(d)) => ReadOptions::bounded(d),
        (ConsistencyArg::Bounded, None) => return Err("--consistency bounded needs --max-staleness".into()),
        (ConsistencyArg::Stale, _) => ReadOptions::stale(),
    };
    let client = Client::builder()
        .endpoints([args.target.endpoint.as_str()])
        .timeout(args.target.timeout)
        .build()
        .await
        .map_err(|e| format!("cannot reach the cluster at {}: {e}", args.target.endpoint))?;
    let value = Bytes::from(vec![b'v'; args.value_size]);
    let set_options = match args.ttl {
        Some(ttl) => SetOptions::new().with_ttl(ttl),
        None => SetOptions::new(),
    };
    if args.workload != Workload::Write && args.fill.is_none() {
        // Reads of missing keys would measure a different path: write every key once first.
        eprintln!("geocache bench: writing {} keys before reading them...", args.keys);
        preload(&client, args.keys, &value, args.clients).await?;
    }

    let progress = Arc::new(Progress { done: AtomicU64::new(0), errors: AtomicU64::new(0) });
    let started = Instant::now();
    let stop_at = started + args.duration;
    let per_second = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let reporter = tokio::spawn(report_progress(progress.clone(), per_second.clone(), args.fill));
    let fill_next = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let client = client.clone();
        let value = value.clone();
        let progress = progress.clone();
        let fill_next = fill_next.clone();
        let (workload, keys, key_dist, fill, rate, clients) =
            (args.workload, args.keys, args.key_dist, args.fill, args.rate, args.clients);
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
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
                let key = format!("bench:{key_index:010}");
                let is_read = fill.is_none()
                    && match workload {
                        Workload::Write => false,
                        Workload::Read => true,
                        Workload::Mixed(ratio) => rng.gen_bool(ratio),
                    };
                let result = if is_read {
                    client.get_with(key, read_options).await.map(|_| ())
                } else {
                    client.set_with(key, value.clone(), set_options).await.map(|_| ())
                };
                let micros = op_started.elapsed().as_micros().max(1) as u64;
                match result {
                    Ok(()) => {
                        let histogram = if is_read { &mut tally.reads } else { &mut tally.writes };
                        let _ = histogram.record(micros.min(histogram.high()));
                    }
                    Err(e) => {
                        *tally.errors.entry(kind(&e)).or_default() += 1;
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
    for task in tasks {
        total.merge(task.await.map_err(|e| format!("a client task failed: {e}"))?);
    }
    let elapsed = started.elapsed();
    reporter.abort();
    eprintln!();
    let series = per_second.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = Report::new(&args, &total, elapsed, &series);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if report.rows.is_empty() {
        return Err(format!("no operation succeeded (is the cluster at {} up?)", args.target.endpoint));
    }
    Ok(())
}

/// Writes keys `0..keys` once, `clients` at a time.
async fn preload(client: &Client, keys: u64, value: &Bytes, clients: usize) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
    for _ in 0..clients {
        let (client, value, next) = (client.clone(), value.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok(());
                }
                client.set(format!("bench:{i:010}"), value.clone()).await.map_err(|e| format!("preload: {e}"))?;
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("a preload task failed: {e}"))??;
    }
    Ok(())
}

/// Prints a progress line every second and keeps the completed operations per second.
async fn report_progress(progress: Arc<Progress>, per_second: Arc<std::sync::Mutex<Vec<u64>>>, fill: Option<u64>) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    loop {
        ticks.tick().await;
        let done = progress.done.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        per_second.lock().unwrap_or_else(|e| e.into_inner()).push(done - last);
        let of = fill.map(|n| format!(" of {n}")).unwrap_or_default();
        eprint!("\r{:>5}s  {done}{of} ops  {} ops/s  {errors} errors   ", started.elapsed().as_secs(), done - last);
        last = done;
    }
}

/// The figures of one run.
struct Report {
    workload: String,
    elapsed: Duration,
    rows: Vec<(&'static str, Row)>,
    errors: BTreeMap<&'static str, u64>,
    /// Completed operations per second in the first and the last quarter of the run (at most
    /// 10 s each): whether the rate held.
    first_rate: f64,
    last_rate: f64,
}

struct Row {
    ops: u64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
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
    fn new(args: &BenchArgs, total: &ClientTally, elapsed: Duration, series: &[u64]) -> Report {
        let workload = match (args.fill, args.workload) {
            (Some(n), _) => format!("fill {n} keys"),
            (None, Workload::Write) => "write".to_string(),
            (None, Workload::Read) => format!("read ({:?})", args.consistency).to_lowercase(),
            (None, Workload::Mixed(r)) => {
                format!("mixed: {:.0}% reads ({:?})", r * 100.0, args.consistency).to_lowercase()
            }
        };
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
        Report { workload, elapsed, rows, errors: total.errors.clone(), first_rate, last_rate }
    }

    fn table(&self) -> String {
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
        let errors: u64 = self.errors.values().sum();
        let detail: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!(
            "errors: {errors}{}\n",
            if detail.is_empty() { String::new() } else { format!(" ({})", detail.join(", ")) }
        ));
        out.push_str(&format!(
            "rate: first {:.0} ops/s, last {:.0} ops/s (completed per second, first and last quarter of the run)\n",
            self.first_rate, self.last_rate
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        let rows: serde_json::Map<String, serde_json::Value> = self
            .rows
            .iter()
            .map(|(op, r)| {
                let row = serde_json::json!({
                    "ops": r.ops, "ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    "p999_ms": r.p999_ms, "max_ms": r.max_ms,
                });
                (op.to_string(), row)
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn workloads_parse() {
        assert_eq!(parse_workload("write"), Ok(Workload::Write));
        assert_eq!(parse_workload("read"), Ok(Workload::Read));
        assert_eq!(parse_workload("mixed:0.9"), Ok(Workload::Mixed(0.9)));
        assert!(parse_workload("mixed:1.5").is_err());
        assert!(parse_workload("scan").is_err());
    }

    #[test]
    fn a_report_keeps_percentiles_and_the_rate_at_both_ends() {
        let mut tally = ClientTally::new();
        for us in 1..=1000 {
            tally.writes.record(us * 10).unwrap();
        }
        tally.errors.insert("timeout", 2);
        let cli = super::super::Cli::try_parse_from(["geocache", "bench", "--workload", "write"]).unwrap();
        let super::super::Command::Bench(args) = cli.command else { panic!("not bench") };
        let report = Report::new(&args, &tally, Duration::from_secs(10), &[100, 100, 50, 50, 50, 50, 50, 10]);
        let (_, row) = &report.rows[0];
        assert_eq!(row.ops, 1000);
        assert!((row.p50_ms - 5.0).abs() < 0.01, "{}", row.p50_ms);
        assert!((row.p99_ms - 9.9).abs() < 0.02, "{}", row.p99_ms);
        assert_eq!(report.first_rate, 100.0);
        assert_eq!(report.last_rate, 30.0);
        assert!(report.table().contains("errors: 2 (timeout 2)"), "{}", report.table());
        assert_eq!(report.json()["ops"]["write"]["ops"], 1000);
    }
}
