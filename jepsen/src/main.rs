//! `geocache-jepsen`: the fault-injection harness's command line. Parses the flags into a
//! [`TestConfig`] and hands it to [`geocache_jepsen::runner::run`]; all the logic lives in the
//! library.
//!
//! Exit codes: 0 the history is valid, 1 it is invalid, 2 unknown (a checker ran out of
//! budget) or a harness error (bad flags, the binary missing, a node that would not start).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use geocache_jepsen::client::Protocol;
use geocache_jepsen::history::ReadLevel;
use geocache_jepsen::nemesis::{NemesisConfig, NemesisKind};
use geocache_jepsen::overload::OverloadConfig;
use geocache_jepsen::runner::{self, CheckModel, TestConfig, WorkloadKind};
use geocache_jepsen::workload::{self, CacheConfig, RegisterConfig};
use geocache_node::netsim::LatencyMatrix;

/// Jepsen-style fault injection for geocache: runs real `geocache serve` processes on loopback
/// behind a fault proxy, drives a workload through clients while a nemesis partitions, kills
/// and pauses nodes, records the history and checks it.
#[derive(Parser, Debug)]
#[command(name = "geocache-jepsen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one test; writes DIR/history.jsonl, DIR/results.json, DIR/latency.svg and DIR/nodes/*.log.
    /// Exit code: 0 valid, 1 invalid, 2 unknown or harness error.
    #[command(
        after_help = "Example:\n  geocache-jepsen test --nodes 5 --nemesis partition,kill,pause --workload register \\\n    \
                            --read-consistency linearizable --time 60s --rate 200 --concurrency 10 --seed 7 --out runs/x\n\n\
                            Replay a run with the same --seed (and flags): the nemesis makes the same choices."
    )]
    Test(TestArgs),
}

#[derive(Args, Debug)]
struct TestArgs {
    /// Number of nodes (all voters), ids 1..=N, regions assigned in turn.
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// Region labels, comma-separated.
    #[arg(long, default_value = "us-east,eu-west,ap-south", value_delimiter = ',')]
    regions: Vec<String>,
    /// One-way latency between regions on every node-to-node link: one duration for every pair
    /// (80ms) or per pair (us-east:eu-west=80ms,us-east:ap-south=150ms,eu-west:ap-south=120ms).
    /// Raft timing is stretched to fit unless --heartbeat/--election-timeout say otherwise.
    #[arg(long, value_parser = parse_latency)]
    latency: Option<LatencyMatrix>,
    /// Faults to inject, comma-separated: partition, kill, pause, crash-points, clock,
    /// membership; `all` (every one, in turn); or `none`.
    /// crash-points and clock need the harness's own node binary, geocache-node-under-test (the
    /// default), which has fault injection; crash-points also makes the nodes snapshot every
    /// 200 entries so the snapshot and purge points are reached.
    #[arg(long, default_value = "partition,kill,pause", value_parser = parse_nemesis)]
    nemesis: NemesisList,
    /// How long each fault lasts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    fault_window: Duration,
    /// How long the cluster stays healthy between faults (and before the first).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    heal_window: Duration,
    /// The largest offset the clock nemesis gives a node's clock, ahead or behind (each fault
    /// picks a quarter to all of it). Entries may expire this much early by the host's clock.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    clock_skew: Duration,
    /// Workload: register (read / write / compare-and-set on a few keys), or cache (get / set
    /// with a TTL from --ttl-range, or none for a fifth of the sets / delete; the TTL checker
    /// then also holds every read to expiry: an entry must not vanish before its TTL).
    #[arg(long, default_value = "register")]
    workload: WorkloadKind,
    /// Cache workload: the range a set's TTL is drawn from (uniformly, whole milliseconds), as
    /// MIN..MAX. Short, so entries really expire during a short test.
    #[arg(long, default_value = "200ms..2s", value_parser = parse_ttl_range)]
    ttl_range: TtlRange,
    /// The nodes' port the workload's clients speak to: grpc (geocache-client), or resp (the
    /// Redis protocol, through the `redis` crate; each node then also gets a RESP port, read
    /// levels are set per connection with CLIENT READLEVEL and read-your-writes pins with
    /// CLIENT MINVERSION). RESP exposes no version to compare against, so under resp the
    /// register workload does reads and writes only, no compare-and-set. The final phase and
    /// the nemesis use gRPC either way.
    #[arg(long, default_value = "grpc")]
    protocol: Protocol,
    /// Level of the workload's reads: linearizable, bounded:DURATION (e.g. bounded:250ms), stale.
    #[arg(long, default_value = "linearizable", value_parser = runner::parse_read_level)]
    read_consistency: ReadLevel,
    /// What the checkers hold reads to: linearizable (the whole history must be linearizable,
    /// whatever level reads were issued at), read-level (each read by its own level's promise),
    /// or auto (read-level for bounded reads, linearizable otherwise).
    #[arg(long, default_value = "auto")]
    model: String,
    /// Length of the run (workload + nemesis), e.g. 60s, 5m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time: Duration,
    /// Workload time after the final heal, with no faults, to see the cluster recover.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    recovery: Duration,
    /// Skip the final phase (by default, at the end every node is killed with -9 and restarted,
    /// every key is read again (durability), and the replicas' state hashes are compared
    /// (convergence)).
    #[arg(long)]
    no_final_checks: bool,
    /// Operations per second, all clients together.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Client processes, each with one operation in flight; spread over the nodes round-robin
    /// for their reads.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Keys in use at a time [default: 5 for register, 20 for cache (so that a key's sets come
    /// far enough apart for its TTLs to run out)].
    #[arg(long)]
    keys: Option<usize>,
    /// Operations after which a key retires for a fresh one (keeps the checker fast).
    #[arg(long, default_value_t = 200)]
    ops_per_key: u64,
    /// Deadline of one client call; a fault then yields an `info` operation, not a stall.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    op_timeout: Duration,
    /// Seed of every random choice (faults, targets, operations): the same seed replays them.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// The node binary [default: the `geocache-node-under-test` this crate builds next to this
    /// executable: `geocache` plus fault injection, which the user's `geocache` never has]
    #[arg(long = "bin", env = "GEOCACHE_BIN")]
    bin: Option<PathBuf>,
    /// Raft heartbeat interval of the nodes (default: fitted to --latency; 150ms without).
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat: Option<Duration>,
    /// Raft election timeout of the nodes (default: fitted to --latency; 1s without).
    #[arg(long, value_parser = humantime::parse_duration)]
    election_timeout: Option<Duration>,
    /// Time the checkers may spend; keys not decided by then are "unknown", never valid.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    check_budget: Duration,
    /// RUST_LOG of the nodes (their logs go to DIR/nodes/node-N.log).
    #[arg(long, default_value = "info,openraft=warn")]
    node_log: String,
    /// For testing the harness itself: FAILPOINTS of a node for the whole run, as ID=SPEC or
    /// all=SPEC (repeatable), e.g. `all=read-skip-read-index=return` makes every follower skip
    /// the read index of linearizable reads (a deliberately broken node the checker must catch).
    /// Needs a node binary with the `fault-points` feature.
    #[arg(long = "node-failpoints", value_name = "ID=SPEC")]
    node_failpoints: Vec<String>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Run every node with TLS: mutual TLS between members and TLS on the client ports, under a
    /// throwaway CA made in OUT/tls (`geocache cert`'s certificates); the workload, the flood
    /// and the final phase connect over TLS. gRPC only.
    #[arg(long)]
    tls: bool,
    /// Overload mode: beside the checked workload, --overload-clients writers write fresh keys
    /// as fast as the cluster takes them (the key space grows for the whole run), and the
    /// liveness checker holds the cluster to two rules while no fault is in force: the leader
    /// stays (no term change), and some write is acknowledged at least every --max-commit-gap.
    #[arg(long)]
    overload: bool,
    /// Overload mode: closed-loop writers of the flood.
    #[arg(long, default_value_t = 64, requires = "overload")]
    overload_clients: usize,
    /// Overload mode: bytes per flooded value.
    #[arg(long, default_value_t = 100, requires = "overload")]
    overload_value_size: usize,
    /// Overload mode: the longest stretch with no fault in force and no acknowledged write that
    /// still counts as live [default: twice the election timeout].
    #[arg(long, value_parser = humantime::parse_duration, requires = "overload")]
    max_commit_gap: Option<Duration>,
}

/// `--node-failpoints` values, by node: `ID=SPEC` or `all=SPEC`; several for one node are
/// joined with `;`.
fn parse_node_failpoints(
    items: &[String],
    nodes: u64,
) -> Result<std::collections::BTreeMap<geocache_node::types::NodeId, String>, String> {
    let mut out = std::collections::BTreeMap::<geocache_node::types::NodeId, String>::new();
    for item in items {
        let (who, spec) = item
            .split_once('=')
            .filter(|(_, spec)| spec.contains('='))
            .ok_or_else(|| format!("--node-failpoints {item:?}: expected ID=NAME=ACTION or all=NAME=ACTION"))?;
        let ids: Vec<u64> = match who.trim() {
            "all" => (1..=nodes).collect(),
            id => {
                let id: u64 = id.parse().map_err(|_| format!("--node-failpoints {item:?}: {id:?} is not a node id"))?;
                if !(1..=nodes).contains(&id) {
                    return Err(format!("--node-failpoints {item:?}: no node {id} (ids are 1..={nodes})"));
                }
                vec![id]
            }
        };
        for id in ids {
            let entry = out.entry(id).or_default();
            if !entry.is_empty() {
                entry.push(';');
            }
            entry.push_str(spec.trim());
        }
    }
    Ok(out)
}

/// A parsed `--ttl-range` value (a newtype, so clap takes the pair as one value).
#[derive(Clone, Copy, Debug)]
struct TtlRange((Duration, Duration));

/// A parsed `--nemesis` value (a newtype, so clap does not treat it as a repeated flag).
#[derive(Clone, Debug)]
struct NemesisList(Vec<NemesisKind>);

fn parse_nemesis(s: &str) -> Result<NemesisList, String> {
    runner::parse_nemesis(s).map(NemesisList)
}

fn parse_ttl_range(s: &str) -> Result<TtlRange, String> {
    workload::parse_ttl_range(s).map(TtlRange)
}

fn parse_latency(s: &str) -> Result<LatencyMatrix, String> {
    LatencyMatrix::parse(s).map_err(|e| e.to_string())
}

/// The `geocache-node-under-test` this crate builds next to this executable (cargo builds both
/// into target/<profile>/): the node with fault injection, which the clock and crash-points
/// nemeses need.
fn default_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let dir = exe.parent().ok_or("this executable has no directory")?;
    Ok(dir.join("geocache-node-under-test"))
}

fn test_config(args: TestArgs) -> Result<TestConfig, String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err("--nodes must be between 1 and 9".into());
    }
    if args.overload && args.overload_clients == 0 {
        return Err("--overload-clients must be at least 1".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.tls && args.protocol != Protocol::Grpc {
        return Err("--tls drives the workload over gRPC only; leave out --protocol resp".into());
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be a positive number of operations per second".into());
    }
    let keys = args.keys.unwrap_or(match args.workload {
        WorkloadKind::Register => RegisterConfig::default().keys,
        WorkloadKind::Cache => CacheConfig::DEFAULT_KEYS,
    });
    if keys == 0 || args.ops_per_key == 0 {
        return Err("--keys and --ops-per-key must be at least 1".into());
    }
    if args.op_timeout.is_zero() || args.fault_window.is_zero() {
        return Err("--op-timeout and --fault-window must be positive".into());
    }
    let regions: Vec<String> =
        args.regions.into_iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
    if regions.is_empty() {
        return Err("--regions needs at least one region".into());
    }
    let model = CheckModel::parse(&args.model, args.read_consistency)?;
    let node_failpoints = parse_node_failpoints(&args.node_failpoints, args.nodes)?;
    let bin = match args.bin {
        Some(bin) => bin,
        None => default_bin()?,
    };
    Ok(TestConfig {
        bin,
        out: args.out,
        nodes: args.nodes,
        regions,
        latency: args.latency,
        heartbeat: args.heartbeat,
        election_timeout: args.election_timeout,
        workload: args.workload,
        register: RegisterConfig {
            read_level: args.read_consistency,
            rate: args.rate,
            concurrency: args.concurrency,
            keys,
            ops_per_key: args.ops_per_key,
            timeout: args.op_timeout,
            seed: args.seed,
            protocol: args.protocol,
            // Read, write, cas; no cas where the protocol cannot express one.
            mix: if args.protocol.supports_cas() { RegisterConfig::default().mix } else { [2, 1, 0] },
            tls_ca_pem: None,
        },
        cache: CacheConfig { ttl_min: args.ttl_range.0 .0, ttl_max: args.ttl_range.0 .1, ..CacheConfig::default() },
        nemesis: NemesisConfig {
            kinds: args.nemesis.0,
            fault_window: args.fault_window,
            heal_window: args.heal_window,
            clock_skew: args.clock_skew,
            seed: args.seed,
        },
        time: args.time,
        recovery: args.recovery,
        final_checks: !args.no_final_checks,
        check_budget: args.check_budget,
        model,
        seed: args.seed,
        node_log_filter: args.node_log,
        node_failpoints,
        progress: !args.quiet,
        tls: args.tls,
        overload: args.overload.then_some(OverloadConfig {
            clients: args.overload_clients,
            value_size: args.overload_value_size,
            max_gap: args.max_commit_gap,
            ..OverloadConfig::default()
        }),
    })
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let Command::Test(args) = cli.command;
    let config = match test_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("geocache-jepsen: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geocache-jepsen: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let outcome = runtime.block_on(runner::run(config));
    runtime.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_issue_example_parses() {
        let cli = Cli::try_parse_from(
            "geocache-jepsen test --nodes 5 --nemesis partition,kill,pause --workload register \
             --read-consistency bounded:250ms --time 60s --rate 200 --concurrency 10 --seed 7 --out runs/x \
             --bin /bin/true"
                .split_whitespace(),
        )
        .unwrap();
        let Command::Test(args) = cli.command;
        let config = test_config(args).unwrap();
        assert_eq!(config.nemesis.kinds, vec![NemesisKind::Partition, NemesisKind::Kill, NemesisKind::Pause]);
        assert_eq!(config.register.read_level, ReadLevel::Bounded(250));
        assert_eq!(config.time, Duration::from_secs(60));
        assert_eq!((config.seed, config.register.seed, config.nemesis.seed), (7, 7, 7));
        assert_eq!(config.out, PathBuf::from("runs/x"));
        assert_eq!(config.regions, vec!["us-east", "eu-west", "ap-south"]);
    }

    #[test]
    fn the_cache_workload_parses_with_its_defaults() {
        let parse = |extra: &str| {
            let line = format!("geocache-jepsen test --workload cache --bin /bin/true {extra}");
            let Command::Test(args) = Cli::try_parse_from(line.split_whitespace()).unwrap().command;
            test_config(args)
        };
        let config = parse("").unwrap();
        assert_eq!(config.workload, WorkloadKind::Cache);
        assert_eq!(config.register.keys, CacheConfig::DEFAULT_KEYS);
        assert_eq!((config.cache.ttl_min, config.cache.ttl_max), (Duration::from_millis(200), Duration::from_secs(2)));
        let config = parse("--ttl-range 50ms..300ms --keys 7").unwrap();
        assert_eq!(
            (config.cache.ttl_min, config.cache.ttl_max),
            (Duration::from_millis(50), Duration::from_millis(300))
        );
        assert_eq!(config.register.keys, 7);
        assert!(Cli::try_parse_from(["geocache-jepsen", "test", "--ttl-range", "2s..1s"]).is_err());
        // The register workload keeps its own default.
        let Command::Test(args) =
            Cli::try_parse_from(["geocache-jepsen", "test", "--bin", "/bin/true"]).unwrap().command;
        assert_eq!(test_config(args).unwrap().register.keys, 5);
    }

    #[test]
    fn overload_flags_parse_and_need_overload() {
        let line = "geocache-jepsen test --bin /bin/true --overload --overload-clients 8 --max-commit-gap 3s";
        let Command::Test(args) = Cli::try_parse_from(line.split_whitespace()).unwrap().command;
        let overload = test_config(args).unwrap().overload.unwrap();
        assert_eq!((overload.clients, overload.max_gap), (8, Some(Duration::from_secs(3))));
        let Command::Test(args) =
            Cli::try_parse_from(["geocache-jepsen", "test", "--bin", "/bin/true"]).unwrap().command;
        assert!(test_config(args).unwrap().overload.is_none());
        assert!(Cli::try_parse_from(["geocache-jepsen", "test", "--overload-clients", "8"]).is_err());
        let line = "geocache-jepsen test --bin /bin/true --overload --overload-clients 0";
        let Command::Test(args) = Cli::try_parse_from(line.split_whitespace()).unwrap().command;
        assert!(test_config(args).unwrap_err().contains("--overload-clients"));
    }

    #[test]
    fn the_resp_protocol_turns_cas_off() {
        let parse = |extra: &str| {
            let line = format!("geocache-jepsen test --bin /bin/true {extra}");
            let Command::Test(args) = Cli::try_parse_from(line.split_whitespace()).unwrap().command;
            test_config(args).unwrap()
        };
        let grpc = parse("");
        assert_eq!((grpc.register.protocol, grpc.register.mix), (Protocol::Grpc, [2, 1, 1]));
        let resp = parse("--protocol resp");
        assert_eq!((resp.register.protocol, resp.register.mix), (Protocol::Resp, [2, 1, 0]));
        assert!(Cli::try_parse_from(["geocache-jepsen", "test", "--protocol", "http"]).is_err());
    }

    #[test]
    fn node_failpoints_parse() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m =
            parse_node_failpoints(&items(&["all=read-skip-read-index=return", "2=apply-after=1*panic"]), 3).unwrap();
        assert_eq!(m[&1], "read-skip-read-index=return");
        assert_eq!(m[&2], "read-skip-read-index=return;apply-after=1*panic");
        assert_eq!(m.len(), 3);
        assert!(parse_node_failpoints(&items(&["4=apply-after=panic"]), 3).unwrap_err().contains("no node 4"));
        assert!(parse_node_failpoints(&items(&["2=apply-after"]), 3).is_err());
        assert!(parse_node_failpoints(&items(&["x=a=b"]), 3).is_err());
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Cli::try_parse_from(["geocache-jepsen", "test", "--nemesis", "chaos"]).is_err());
        assert!(Cli::try_parse_from(["geocache-jepsen", "test", "--read-consistency", "fresh"]).is_err());
        assert!(Cli::try_parse_from(["geocache-jepsen", "test", "--workload", "bank"]).is_err());
        let cli = Cli::try_parse_from(["geocache-jepsen", "test", "--nodes", "0", "--bin", "/bin/true"]).unwrap();
        let Command::Test(args) = cli.command;
        assert!(test_config(args).unwrap_err().contains("--nodes"));
    }
}
