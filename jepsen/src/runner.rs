//! One test run, phase by phase:
//!
//! 1. **setup**: start the cluster ([`crate::control`]) in `DIR/nodes/`, initialise it, wait
//!    for a leader, build the clients;
//! 2. **run** for `time`: the workload ([`crate::workload`]) and the nemesis
//!    ([`crate::nemesis`]) side by side, with a progress line on stderr every second;
//! 3. **final heal**: the nemesis undoes its fault and heals everything (links up, paused nodes
//!    resumed, killed nodes restarted);
//! 4. **recovery** for `recovery`: the workload goes on against the healed cluster, so the
//!    history shows whether it recovered;
//! 5. **stop**: the workers finish their operations in flight, the cluster is checked for a
//!    leader and for nodes that died on their own;
//! 6. **final** (with `final_checks`; bounded by [`FINAL_BUDGET`] and [`CONVERGENCE_TIMEOUT`]): every node is killed
//!    with `kill -9` and restarted on its data dir, and once they agree on a leader every key the
//!    workload used is read once more, linearizably, by the final processes
//!    ([`checker::durability::FINAL_PROCESS_BASE`] and up; ordinary operations of the history,
//!    so the linearizability and durability checkers judge them). Then, with the cluster quiet,
//!    every node's own `applied` index and `state_hash` are sampled until all are seen at one
//!    index ([`checker::convergence`]). Then every process is killed;
//! 7. **check**: `history.jsonl` is written and judged by [`crate::checker::check_all`] within a
//!    time budget; `results.json` gets the verdict, the fault windows and the figures, and
//!    `latency.svg` the latency plot ([`crate::plot`]).
//!
//! Harness errors (the binary is missing, a node will not start or restart, the output dir
//! cannot be written, the run is interrupted) are kept apart from the system's failures: they
//! end the run with `harness_error` set, `valid: "unknown"` and exit code 2, whatever the
//! checkers say. The history recorded up to that point is still written and checked, for
//! whoever investigates.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use geocache_node::netsim::LatencyMatrix;
use serde::Serialize;
use tokio::sync::watch;

use crate::checker::{self, Verdict};
use crate::client::Protocol;
use crate::control::{Cluster, ClusterSpec};
use crate::history::{self, Op, ReadLevel};
use crate::nemesis::{self, CurrentFault, FaultWindow, NemesisConfig, NemesisKind};
use crate::overload::{self, Flood, FloodFigures, OverloadConfig};
use crate::report::{Figures, Results, Timings};
use crate::workload::{self, CacheConfig, Recorder, RegisterConfig};

/// How long setup may take to elect the first leader.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// `--snapshot-every` of the nodes when the `crash-points` nemesis is on, so the snapshot and
/// purge fault points are reached within a short test (the node's default is 10,000 entries).
pub const CRASH_POINTS_SNAPSHOT_EVERY: u64 = 200;
/// How long the healed cluster may take to agree on a leader at the end.
const FINAL_LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// The final phase's restart of every node, the wait for a leader and the final reads together.
const FINAL_BUDGET: Duration = Duration::from_secs(15);
/// Deadline of one final read.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the convergence check samples the nodes for one where all are at the same index.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two convergence samples.
const CONVERGENCE_INTERVAL: Duration = Duration::from_millis(20);

/// The workloads the harness can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Each key a register: read, write, compare-and-set ([`workload::run_register`]).
    Register,
    /// Each key a cache entry: get, set with a TTL, delete ([`workload::run_cache`]).
    Cache,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Cache => "cache",
        }
    }
}

impl std::str::FromStr for WorkloadKind {
    type Err = String;

    fn from_str(s: &str) -> Result<WorkloadKind, String> {
        match s {
            "register" => Ok(WorkloadKind::Register),
            "cache" => Ok(WorkloadKind::Cache),
            other => Err(format!("unknown workload {other:?}; known: register, cache")),
        }
    }
}

/// Parses `linearizable`, `stale` or `bounded:250ms`.
pub fn parse_read_level(s: &str) -> Result<ReadLevel, String> {
    match s {
        "linearizable" => Ok(ReadLevel::Linearizable),
        "stale" => Ok(ReadLevel::Stale),
        other => {
            let hint = "expected linearizable, stale or bounded:DURATION (e.g. bounded:250ms)";
            let d = other.strip_prefix("bounded:").ok_or_else(|| format!("unknown read level {other:?}; {hint}"))?;
            let d = humantime::parse_duration(d).map_err(|e| format!("bad bound in {other:?}: {e}; {hint}"))?;
            let ms = u64::try_from(d.as_millis()).map_err(|_| format!("bound in {other:?} is too large"))?;
            if ms == 0 {
                return Err(format!("the bound in {other:?} must be at least 1ms"));
            }
            Ok(ReadLevel::Bounded(ms))
        }
    }
}

/// What the checkers hold the reads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckModel {
    /// The history must be linearizable as a whole: every read is judged as a linearizable
    /// register read, whatever level it was issued at. With weaker reads this asks "is the
    /// system still linearizable?", and a stale read that missed an acknowledged write is an
    /// anomaly. (`history.jsonl` keeps the level each read was really issued at.)
    Linearizable,
    /// Each read is judged by its own level's promise: linearizable reads by linearizability,
    /// bounded reads by their bound, stale reads only for returning something written.
    ReadLevel,
}

impl CheckModel {
    /// Parses `linearizable`, `read-level` or `auto`: `read-level` when the workload's reads
    /// are bounded (so the bound is what gets checked), `linearizable` otherwise (a stale read
    /// promises nothing of its own, so a stale run asks whether the history is linearizable).
    pub fn parse(s: &str, reads: ReadLevel) -> Result<CheckModel, String> {
        match s {
            "linearizable" => Ok(CheckModel::Linearizable),
            "read-level" => Ok(CheckModel::ReadLevel),
            "auto" => Ok(match reads {
                ReadLevel::Bounded(_) => CheckModel::ReadLevel,
                ReadLevel::Linearizable | ReadLevel::Stale => CheckModel::Linearizable,
            }),
            other => Err(format!("unknown model {other:?}; known: linearizable, read-level, auto")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CheckModel::Linearizable => "linearizable",
            CheckModel::ReadLevel => "read-level",
        }
    }

    /// The history as the checkers judge it under this model ([`checker::check_all`] does the
    /// same, told by [`checker::CheckConfig::reads_as_linearizable`]).
    pub fn judged(self, history: &[history::Event]) -> Vec<history::Event> {
        match self {
            CheckModel::Linearizable => checker::reads_as_linearizable(history),
            CheckModel::ReadLevel => history.to_vec(),
        }
    }
}

/// Everything one test needs.
#[derive(Clone, Debug, Serialize)]
pub struct TestConfig {
    /// The `geocache` binary.
    pub bin: PathBuf,
    /// Output dir (created if missing).
    pub out: PathBuf,
    pub nodes: u64,
    pub regions: Vec<String>,
    /// Latency spec between regions (see `geocache_node::netsim::LatencyMatrix`), if any.
    #[serde(serialize_with = "display_opt")]
    pub latency: Option<LatencyMatrix>,
    #[serde(serialize_with = "crate::report::human_duration_opt")]
    pub heartbeat: Option<Duration>,
    #[serde(serialize_with = "crate::report::human_duration_opt")]
    pub election_timeout: Option<Duration>,
    pub workload: WorkloadKind,
    /// The settings every workload shares, and the register workload's mix.
    pub register: RegisterConfig,
    /// The cache workload's own settings (mix, TTL range).
    pub cache: CacheConfig,
    pub nemesis: NemesisConfig,
    /// Length of the run phase (workload + nemesis).
    #[serde(serialize_with = "crate::report::human_duration")]
    pub time: Duration,
    /// Length of the recovery phase after the final heal (workload only).
    #[serde(serialize_with = "crate::report::human_duration")]
    pub recovery: Duration,
    /// Run the final phase (restart every node, final reads, convergence sampling).
    pub final_checks: bool,
    /// Time the checkers may take.
    #[serde(serialize_with = "crate::report::human_duration")]
    pub check_budget: Duration,
    /// What the checkers hold the reads to.
    pub model: CheckModel,
    pub seed: u64,
    /// `RUST_LOG` for the nodes.
    pub node_log_filter: String,
    /// `FAILPOINTS` of chosen nodes for the whole run (for testing the harness itself, e.g.
    /// `read-skip-read-index=return`: a deliberately broken follower).
    pub node_failpoints: std::collections::BTreeMap<geocache_node::types::NodeId, String>,
    /// Print a progress line every second.
    pub progress: bool,
    /// `--overload`: flood the cluster with writes beside the workload and judge liveness.
    /// Every node with TLS (peers and clients), under a throwaway CA ([`ClusterSpec::tls`]).
    pub tls: bool,
    pub overload: Option<OverloadConfig>,
}

fn display_opt<S: serde::Serializer, T: std::fmt::Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub harness_error: Option<String>,
}

impl Outcome {
    /// 0 valid, 1 invalid, 2 unknown or harness error.
    pub fn exit_code(&self) -> i32 {
        if self.harness_error.is_some() {
            return 2;
        }
        match self.verdict {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

/// What the run phases leave for the report.
#[derive(Default)]
struct Run {
    started_at: Option<String>,
    history: Vec<history::Event>,
    faults: Vec<FaultWindow>,
    node_exits: Vec<crate::control::UnexpectedExit>,
    fault_point_exits: Vec<crate::control::FaultPointExit>,
    notes: Vec<String>,
    error: Option<anyhow::Error>,
    timings: Timings,
    /// The replicas' applied indexes and state hashes at the end; `None` if not sampled.
    convergence: Option<checker::convergence::ConvergenceReport>,
    /// Under `--overload`: the liveness verdict and what the flood did.
    liveness: Option<checker::liveness::LivenessReport>,
    flood: Option<FloodFigures>,
}

/// Runs one test and writes its output dir. Never panics on a harness failure: it is reported
/// in the [`Outcome`] (and in `results.json` when the output dir is writable).
pub async fn run(config: TestConfig) -> Outcome {
    if let Err(e) = std::fs::create_dir_all(&config.out) {
        let msg = format!("cannot create the output dir {}: {e}", config.out.display());
        return Outcome { verdict: Verdict::Unknown, harness_error: Some(msg) };
    }
    let mut run = phases(&config).await;
    // The nodes are gone by now; from here on an interrupt need not wait for anything (the
    // handler installed during the run would otherwise swallow it until the check is done).
    tokio::spawn(async {
        let signal = interrupted().await;
        eprintln!("geocache-jepsen: interrupted by {signal} after the run; exiting");
        std::process::exit(2);
    });

    // Write the history first: whatever happens next, it is on disk.
    let history_path = config.out.join("history.jsonl");
    if !run.history.is_empty() || run.error.is_none() {
        if let Err(e) = std::fs::write(&history_path, history::to_jsonl(&run.history)) {
            let e = anyhow::Error::from(e).context(format!("write {}", history_path.display()));
            run.error.get_or_insert(e);
        }
    }

    let check_started = Instant::now();
    let checks = if run.history.is_empty() && run.error.is_some() {
        None
    } else {
        // The checker applies the model itself, so that it still knows each read's real level.
        let events = run.history.clone();
        let check = checker::CheckConfig {
            budget: config.check_budget,
            // The TTL checker's slack includes how far apart the clock nemesis set the clocks.
            clock_skew_ms: nemesis::clock_spread_ms(&run.faults),
            reads_as_linearizable: config.model == CheckModel::Linearizable,
        };
        eprintln!(
            "checking {} events, reads held to the {} model (budget {}, TTL slack {}ms)",
            events.len(),
            config.model.name(),
            humantime::format_duration(check.budget),
            check.slack_ms()
        );
        let convergence = run.convergence.take();
        let liveness = run.liveness.take();
        match tokio::task::spawn_blocking(move || checker::check_all(&events, &check)).await {
            Ok(mut report) => {
                if let Some(c) = convergence {
                    report.add_convergence(c);
                }
                if let Some(l) = liveness {
                    eprintln!("liveness under overload: {} ({})", l.valid, l.explanation);
                    report.add_liveness(l);
                }
                Some(report)
            }
            Err(e) => {
                run.error.get_or_insert(anyhow::anyhow!("the checker panicked: {e}"));
                None
            }
        }
    };
    run.timings.check_s = check_started.elapsed().as_secs_f64();

    let harness_error = run.error.as_ref().map(|e| format!("{e:#}"));
    let verdict = match (&harness_error, &checks) {
        (None, Some(report)) => report.valid,
        _ => Verdict::Unknown,
    };
    let figures = (!run.history.is_empty()).then(|| Figures::compute(&run.history, &run.faults));
    // The latency plot is for people: one that cannot be drawn is a note, and changes nothing else.
    if !run.history.is_empty() {
        let title = format!(
            "{} workload, {} reads, nemesis [{}], {} nodes, seed {}",
            config.workload.name(),
            read_level_name(config.register.read_level),
            config.nemesis.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
            config.nodes,
            config.seed
        );
        let path = config.out.join("latency.svg");
        if let Err(e) = crate::plot::write_latency_svg(&path, &run.history, &run.faults, &title) {
            eprintln!("warning: no latency plot: {e:#}");
            run.notes.push(format!("latency.svg not written (a harness problem, not a finding): {e:#}"));
        }
    }
    let results = Results {
        valid: verdict,
        seed: config.seed,
        started_at: run.started_at,
        model: config.model,
        harness_error: harness_error.clone(),
        checks,
        faults: run.faults,
        figures: figures.clone(),
        flood: run.flood,
        node_exits: run.node_exits,
        fault_point_exits: run.fault_point_exits,
        notes: run.notes,
        timings: run.timings,
        config: serde_json::to_value(&config).unwrap_or_default(),
    };
    let mut harness_error = harness_error;
    if let Err(e) = results.write(&config.out) {
        harness_error.get_or_insert(format!("{e:#}"));
    }

    // The summary, for people.
    if let Some(f) = &figures {
        eprint!("{}", f.summary());
    }
    for exit in &results.fault_point_exits {
        eprintln!("node {} died at fault point {} at {:.1}s, as armed", exit.node, exit.point, exit.at_s);
    }
    for exit in &results.node_exits {
        eprintln!("node {} exited on its own at {:.1}s ({})", exit.node, exit.at_s, exit.status);
    }
    for note in &results.notes {
        eprintln!("note: {note}");
    }
    match &harness_error {
        Some(e) => eprintln!("HARNESS ERROR (not a finding about geocache): {e}"),
        None => eprintln!(
            "verdict: {} (results in {})",
            match verdict {
                Verdict::Valid => "valid",
                Verdict::Invalid => "INVALID",
                Verdict::Unknown => "unknown",
            },
            config.out.join("results.json").display()
        ),
    }
    Outcome { verdict, harness_error }
}

/// Setup, run, final heal, recovery, stop. Harness errors land in `Run::error`.
async fn phases(config: &TestConfig) -> Run {
    let mut run = Run::default();
    let setup_started = Instant::now();
    let spec = ClusterSpec {
        bin: config.bin.clone(),
        dir: config.out.clone(),
        nodes: config.nodes,
        regions: config.regions.clone(),
        latency: config.latency.clone(),
        heartbeat: config.heartbeat,
        election_timeout: config.election_timeout,
        node_log_filter: config.node_log_filter.clone(),
        extra_args: if config.nemesis.kinds.contains(&NemesisKind::CrashPoints) {
            vec!["--snapshot-every".into(), CRASH_POINTS_SNAPSHOT_EVERY.to_string()]
        } else {
            Vec::new()
        },
        env: Vec::new(),
        node_env: config
            .node_failpoints
            .iter()
            .map(|(id, spec)| (*id, vec![("FAILPOINTS".to_string(), spec.clone())]))
            .collect(),
        resp: config.register.protocol == Protocol::Resp,
        tls: config.tls,
    };
    eprintln!(
        "setup: {} nodes ({}) from {}, output in {}",
        config.nodes,
        config.regions.join(", "),
        config.bin.display(),
        config.out.display()
    );
    let cluster = match Cluster::start(spec, SETUP_TIMEOUT).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            run.error = Some(e.context("setup"));
            return run;
        }
    };
    run.timings.setup_s = setup_started.elapsed().as_secs_f64();

    // One clock for the history and the fault windows.
    let recorder = Arc::new(Recorder::new(Instant::now()));
    run.started_at = Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
    let (stop_workload, workload_stopped) = watch::channel(false);
    let (stop_nemesis, nemesis_stopped) = watch::channel(false);
    let current: CurrentFault = Arc::new(Mutex::new(None));

    let mut workload = {
        let (mut register, recorder, workload_stopped) =
            (config.register.clone(), recorder.clone(), workload_stopped.clone());
        register.tls_ca_pem = cluster.ca_pem();
        let endpoints = match config.register.protocol {
            Protocol::Grpc => cluster.endpoints(),
            Protocol::Resp => cluster.resp_endpoints(),
        };
        match config.workload {
            WorkloadKind::Register => {
                tokio::spawn(workload::run_register(register, endpoints, recorder, workload_stopped))
            }
            WorkloadKind::Cache => {
                tokio::spawn(workload::run_cache(register, config.cache, endpoints, recorder, workload_stopped))
            }
        }
    };
    // Under --overload: the flood and the leadership watch run as long as the workload does.
    let flood = config.overload.map(|_| Arc::new(Flood::new(recorder.start())));
    let flood_started_ns = recorder.now_ns();
    let flood_task = config.overload.zip(flood.clone()).map(|(overload, flood)| {
        tokio::spawn(overload::run_flood(
            overload,
            cluster.endpoints(),
            cluster.ca_pem(),
            flood,
            workload_stopped.clone(),
        ))
    });
    let watch_task = config
        .overload
        .map(|_| tokio::spawn(overload::watch_leadership(cluster.clone(), recorder.start(), workload_stopped.clone())));
    let nemesis = tokio::spawn(nemesis::run(
        config.nemesis.clone(),
        cluster.clone(),
        recorder.start(),
        current.clone(),
        nemesis_stopped,
    ));
    let progress = config
        .progress
        .then(|| tokio::spawn(progress(recorder.clone(), cluster.clone(), current.clone(), flood.clone())));
    eprintln!(
        "run: {} of the {} workload ({} reads) under nemesis [{}], seed {}",
        humantime::format_duration(config.time),
        config.workload.name(),
        read_level_name(config.register.read_level),
        config.nemesis.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        config.seed
    );

    // The run phase; it ends early if the workload fails or someone hits Ctrl-C.
    let run_started = Instant::now();
    let mut workload_done = None;
    tokio::select! {
        _ = tokio::time::sleep(config.time) => {}
        done = &mut workload => workload_done = Some(done),
        signal = interrupted() => run.error = Some(anyhow::anyhow!("interrupted by {signal}")),
    }
    run.timings.run_s = run_started.elapsed().as_secs_f64();

    // Final heal, then recovery with the workload still running.
    let _ = stop_nemesis.send(true);
    let outcome = match nemesis.await {
        Ok(o) => o,
        Err(e) => {
            nemesis::NemesisOutcome { windows: Vec::new(), error: Some(anyhow::anyhow!("nemesis panicked: {e}")) }
        }
    };
    run.faults = outcome.windows;
    if let Some(e) = outcome.error {
        run.error.get_or_insert(e.context("nemesis"));
    }
    let recovery_started = Instant::now();
    if run.error.is_none() && workload_done.is_none() {
        eprintln!("recovery: everything healed; {} more of workload", humantime::format_duration(config.recovery));
        tokio::select! {
            _ = tokio::time::sleep(config.recovery) => {}
            done = &mut workload => workload_done = Some(done),
            signal = interrupted() => run.error = Some(anyhow::anyhow!("interrupted by {signal}")),
        }
    }
    let _ = stop_workload.send(true);
    let done = match workload_done {
        Some(done) => done,
        None => workload.await,
    };
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            run.error.get_or_insert(e.context("workload"));
        }
        Err(e) => {
            run.error.get_or_insert(anyhow::anyhow!("workload panicked: {e}"));
        }
    }
    run.timings.recovery_s = recovery_started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    if let (Some(flood_task), Some(watch_task), Some(flood), Some(overload)) =
        (flood_task, watch_task, &flood, config.overload)
    {
        let flood_stopped_ns = recorder.now_ns();
        if let Ok(Err(e)) | Err(e) = flood_task.await.map_err(anyhow::Error::from) {
            run.error.get_or_insert(e.context("overload flood"));
        }
        let samples = watch_task.await.unwrap_or_default();
        let mut commits = flood.commit_times();
        commits.extend(acknowledged_writes(&recorder.events()));
        let election = cluster.election_timeout();
        let rule = checker::liveness::LivenessRule {
            start_ns: flood_started_ns,
            end_ns: flood_stopped_ns,
            grace_ns: nanos(2 * election),
            max_gap_ns: nanos(overload.max_gap.unwrap_or(2 * election)),
        };
        run.liveness = Some(checker::liveness::judge(&samples, &commits, &run.faults, rule));
        run.flood = Some(flood.figures(flood_started_ns, flood_stopped_ns));
    }

    // Stop: is the healed cluster live, did any node die on its own?
    if run.error.is_none() {
        if let Err(e) = cluster.wait_for_leader(FINAL_LEADER_TIMEOUT).await {
            run.notes.push(format!("after the final heal: {e:#}"));
        }
    }
    // Durability and convergence: restart every node, read every key, sample the replicas.
    if run.error.is_none() && config.final_checks {
        let final_started = Instant::now();
        eprintln!("final: kill -9 and restart every node, read every key, check convergence");
        if let Err(e) = final_reads(&cluster, &recorder, &mut run.notes).await {
            run.error.get_or_insert(e.context("final restart"));
        } else {
            let samples = sample_convergence(&cluster, &recorder).await;
            let report = checker::convergence::judge(&samples);
            eprintln!("convergence: {} ({})", report.valid, report.explanation);
            run.convergence = Some(report);
        }
        run.timings.final_s = final_started.elapsed().as_secs_f64();
    }
    run.node_exits = cluster.unexpected_exits();
    run.fault_point_exits = cluster.fault_point_exits();
    run.history = recorder.events();
    drop(cluster); // kills every node
    run
}

/// Kills every node with `kill -9`, restarts them all on their data dirs, waits for a leader
/// and reads every key the history mentions with a linearizable read, retrying a key whose read
/// fails until [`FINAL_BUDGET`] is spent. The reads are recorded as operations of the final
/// processes (a new one for each attempt). Errors only if a node cannot be restarted (a harness
/// error); a cluster that elects no leader, or keys left unread, are a note and `unknown` keys
/// for the durability checker.
async fn final_reads(cluster: &Cluster, recorder: &Recorder, notes: &mut Vec<String>) -> Result<()> {
    let started = Instant::now();
    let deadline = started + FINAL_BUDGET;
    let keys: std::collections::BTreeSet<String> = recorder.events().iter().map(|e| e.op.key().to_string()).collect();
    cluster.poll_exits();
    for id in cluster.ids() {
        use crate::control::ProcessState;
        if let Some(ProcessState::Running | ProcessState::Paused) = cluster.state(id) {
            cluster.kill(id)?;
        }
    }
    for id in cluster.ids() {
        cluster.restart(id).await.with_context(|| format!("restart node {id} after killing every node"))?;
    }
    let restarted_s = started.elapsed().as_secs_f64();
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = cluster.wait_for_leader(left).await {
        notes.push(format!("after restarting every node: {e:#}"));
    }
    let leader_s = started.elapsed().as_secs_f64();

    let endpoints: Vec<String> = cluster.endpoints().into_iter().map(|(_, a)| a).collect();
    let client = crate::client::client_builder(cluster.ca_pem().as_deref())
        .endpoints(endpoints)
        .timeout(FINAL_READ_TIMEOUT)
        .connect_timeout(FINAL_READ_TIMEOUT / 2)
        .attempt_timeout(FINAL_READ_TIMEOUT / 2)
        .build()
        .await
        .context("build the final reads' client")?;
    let mut process = checker::durability::FINAL_PROCESS_BASE;
    let mut unread = Vec::new();
    for key in &keys {
        loop {
            let op = Op::Read { key: key.clone(), level: ReadLevel::Linearizable, value: None, after: None };
            recorder.invoke(process, &op);
            let result = client.get_with(key.clone(), workload::read_options(ReadLevel::Linearizable)).await;
            let done = match result {
                Ok(entry) => {
                    let value = entry.map(|e| String::from_utf8_lossy(&e.value).into_owned());
                    let read = Op::Read { key: key.clone(), level: ReadLevel::Linearizable, value, after: None };
                    recorder.complete(process, history::EventKind::Ok, read, None);
                    true
                }
                Err(e) => {
                    recorder.complete(process, workload::error_kind(&e), op, Some(e.to_string()));
                    false
                }
            };
            process += 1;
            if done {
                break;
            }
            if Instant::now() >= deadline {
                unread.push(key.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "final: every node restarted in {restarted_s:.1}s, leader by {leader_s:.1}s, {} keys read by {:.1}s",
        keys.len() - unread.len(),
        started.elapsed().as_secs_f64()
    );
    if !unread.is_empty() {
        notes.push(format!(
            "after restarting every node, {} of {} keys could not be read within {}: {}",
            unread.len(),
            keys.len(),
            humantime::format_duration(FINAL_BUDGET),
            unread.join(", ")
        ));
    }
    Ok(())
}

/// Samples every node's own applied index and state hash (all at once) until one sample has
/// them all at the same index, a divergence shows, or [`CONVERGENCE_TIMEOUT`] passes.
async fn sample_convergence(cluster: &Arc<Cluster>, recorder: &Recorder) -> Vec<checker::convergence::Sample> {
    use checker::convergence::{judge, NodeSample, Sample};
    let deadline = Instant::now() + CONVERGENCE_TIMEOUT;
    let mut samples = Vec::new();
    loop {
        let at_ns = recorder.now_ns();
        let mut set = tokio::task::JoinSet::new();
        for id in cluster.ids() {
            let cluster = cluster.clone();
            set.spawn(async move {
                let status = cluster.local_status(id).await;
                let me = status.as_ref().and_then(|s| s.nodes.iter().find(|n| n.id == s.node_id));
                NodeSample { node: id, applied: me.map(|n| n.applied), state_hash: me.and_then(|n| n.state_hash) }
            });
        }
        let mut nodes = Vec::new();
        while let Some(n) = set.join_next().await {
            if let Ok(n) = n {
                nodes.push(n);
            }
        }
        nodes.sort_by_key(|n| n.node);
        samples.push(Sample { at_ns, nodes });
        if judge(&samples).valid != Verdict::Unknown || Instant::now() >= deadline {
            return samples;
        }
        tokio::time::sleep(CONVERGENCE_INTERVAL).await;
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, naming it. Either way the run stops the normal way:
/// the nemesis heals (a node left paused by a harness that just died would stay stopped, deaf
/// to its closed stdin), the nodes are killed and what was recorded is written.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

fn read_level_name(level: ReadLevel) -> String {
    match level {
        ReadLevel::Linearizable => "linearizable".into(),
        ReadLevel::Bounded(ms) => format!("bounded:{ms}ms"),
        ReadLevel::Stale => "stale".into(),
    }
}

/// When each acknowledged write of the workload (write, cas, set, delete) completed, ns.
fn acknowledged_writes(history: &[history::Event]) -> Vec<u64> {
    history
        .iter()
        .filter(|e| e.kind == history::EventKind::Ok && !matches!(e.op, Op::Read { .. }))
        .map(|e| e.time_ns)
        .collect()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A line on stderr every second: elapsed time, operations, outcomes, the fault in force (and,
/// under `--overload`, the flood's acknowledged writes). Also notices nodes that exit on their own.
async fn progress(recorder: Arc<Recorder>, cluster: Arc<Cluster>, current: CurrentFault, flood: Option<Arc<Flood>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        for exit in cluster.poll_exits() {
            eprintln!("!! node {} exited on its own ({}); its log ends:\n{}", exit.node, exit.status, exit.log_tail);
        }
        let c = recorder.counts();
        let fault = current.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| "healthy".into());
        let flooded = flood.as_ref().map(|f| format!("  flood {:>7}", f.acknowledged())).unwrap_or_default();
        eprintln!(
            "[{:>6.1}s] ops {:>6}  ok {:>6}  fail {:>5}  info {:>5}{flooded}  | {fault}",
            recorder.start().elapsed().as_secs_f64(),
            c.invoked,
            c.ok,
            c.fail,
            c.info
        );
    }
}

/// The nemesis kinds of a `--nemesis` flag value.
pub fn parse_nemesis(spec: &str) -> Result<Vec<NemesisKind>, String> {
    NemesisKind::parse_list(spec)
}

/// Reads a `results.json` back (for tests and tools).
pub fn read_results(dir: &std::path::Path) -> Result<serde_json::Value> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_levels_parse() {
        assert_eq!(parse_read_level("linearizable").unwrap(), ReadLevel::Linearizable);
        assert_eq!(parse_read_level("stale").unwrap(), ReadLevel::Stale);
        assert_eq!(parse_read_level("bounded:250ms").unwrap(), ReadLevel::Bounded(250));
        assert_eq!(parse_read_level("bounded:2s").unwrap(), ReadLevel::Bounded(2000));
        for bad in ["bounded", "bounded:", "bounded:0ms", "fresh"] {
            let err = parse_read_level(bad).unwrap_err();
            assert!(err.contains("bounded:") || err.contains("1ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn models_resolve_and_relabel_reads() {
        let auto = |level| CheckModel::parse("auto", level).unwrap();
        assert_eq!(auto(ReadLevel::Stale), CheckModel::Linearizable);
        assert_eq!(auto(ReadLevel::Linearizable), CheckModel::Linearizable);
        assert_eq!(auto(ReadLevel::Bounded(250)), CheckModel::ReadLevel);
        assert_eq!(CheckModel::parse("read-level", ReadLevel::Stale).unwrap(), CheckModel::ReadLevel);
        assert!(CheckModel::parse("sequential", ReadLevel::Stale).is_err());

        let read = |level| history::Event {
            index: 0,
            time_ns: 0,
            process: 0,
            kind: history::EventKind::Invoke,
            op: Op::Read { key: "k".into(), level, value: None, after: None },
            error: None,
        };
        let history = vec![read(ReadLevel::Stale), read(ReadLevel::Bounded(5))];
        assert_eq!(CheckModel::ReadLevel.judged(&history), history);
        let judged = CheckModel::Linearizable.judged(&history);
        assert!(judged.iter().all(|e| matches!(e.op, Op::Read { level: ReadLevel::Linearizable, .. })));
    }

    #[test]
    fn exit_codes_follow_the_verdict_unless_the_harness_failed() {
        let o = |verdict, err: Option<&str>| Outcome { verdict, harness_error: err.map(Into::into) };
        assert_eq!(o(Verdict::Valid, None).exit_code(), 0);
        assert_eq!(o(Verdict::Invalid, None).exit_code(), 1);
        assert_eq!(o(Verdict::Unknown, None).exit_code(), 2);
        assert_eq!(o(Verdict::Invalid, Some("node 2 would not restart")).exit_code(), 2);
    }
}
