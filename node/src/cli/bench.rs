//! `geocache bench`: a load generator for any running cluster, built on `geocache-client` (so it
//! measures what an application sees: routing, retries, the wire).
//!
//! This is the command line over [`crate::loadgen`], which owns the loop, the histograms, the
//! progress line and the report (closed loop by default; open loop with `--rate`, latency counted
//! from each operation's due time; `--fill N` writes N distinct keys once and stops). Here: the
//! flags, one `geocache-client` shared by all `--clients` tasks, and the preload that writes every
//! key once before a workload with reads.

use std::time::Duration;

use clap::Args;
use geocache_client::{ReadOptions, SetOptions};

use super::{parse_duration, ConsistencyArg, Target};
use crate::loadgen::{self, GeocacheBackend, KeyDist, Plan, Workload};

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

fn parse_workload(s: &str) -> Result<Workload, String> {
    s.parse()
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

/// What the report calls the workload.
fn workload_name(args: &BenchArgs) -> String {
    match (args.fill, args.workload) {
        (Some(n), _) => format!("fill {n} keys"),
        (None, Workload::Write) => "write".to_string(),
        (None, Workload::Read) => format!("read ({:?})", args.consistency).to_lowercase(),
        (None, Workload::Mixed(r)) => format!("mixed: {:.0}% reads ({:?})", r * 100.0, args.consistency).to_lowercase(),
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
    let client = args
        .target
        .client_builder()?
        .timeout(args.target.timeout)
        .build()
        .await
        .map_err(|e| format!("cannot reach the cluster at {}: {e}", args.target.endpoint))?;
    let set_options = match args.ttl {
        Some(ttl) => SetOptions::new().with_ttl(ttl),
        None => SetOptions::new(),
    };
    if args.workload != Workload::Write && args.fill.is_none() {
        // Reads of missing keys would measure a different path: write every key once first
        // (without a TTL, so they are still there when read).
        eprintln!("geocache bench: writing {} keys before reading them...", args.keys);
        let writer = GeocacheBackend::new(client.clone(), read_options, SetOptions::new());
        loadgen::preload(&vec![writer; args.clients], args.keys, args.value_size).await.map_err(|e| e.to_string())?;
    }
    let plan = Plan {
        name: workload_name(&args),
        workload: args.workload,
        duration: args.duration,
        rate: args.rate,
        value_size: args.value_size,
        keys: args.keys,
        key_dist: args.key_dist,
        fill: args.fill,
        seed: args.seed,
        progress: Some(String::new()),
    };
    // One client shared by every task: what an application with one `Client` sees.
    let backend = GeocacheBackend::new(client, read_options, set_options);
    let report = loadgen::run(&vec![backend; args.clients], &plan).await.map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn bench_args(args: &[&str]) -> BenchArgs {
        let cli = super::super::Cli::try_parse_from([&["geocache", "bench"], args].concat()).unwrap();
        let super::super::Command::Bench(args) = cli.command else { panic!("not bench") };
        args
    }

    #[test]
    fn flags_parse_into_the_engine_plan() {
        let args = bench_args(&["--workload", "mixed:0.9", "--consistency", "stale", "--key-dist", "zipfian"]);
        assert_eq!(args.workload, Workload::Mixed(0.9));
        assert_eq!(args.key_dist, KeyDist::Zipfian);
        assert_eq!(workload_name(&args), "mixed: 90% reads (stale)");
        assert_eq!(workload_name(&bench_args(&["--workload", "read"])), "read (linearizable)");
        assert_eq!(workload_name(&bench_args(&["--fill", "5"])), "fill 5 keys");
        assert!(super::super::Cli::try_parse_from(["geocache", "bench", "--workload", "mixed:1.5"]).is_err());
    }
}
