//! Runs the `geocache-jepsen` binary as a user would, against the node binary this crate builds
//! (`geocache-node-under-test`), in a temporary output dir, and reads back what it wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use geocache_jepsen::history::{self, Event, EventKind, Op, ReadLevel};

pub const HARNESS: &str = env!("CARGO_BIN_EXE_geocache-jepsen");
pub const NODE: &str = env!("CARGO_BIN_EXE_geocache-node-under-test");

/// What one harness run left.
pub struct HarnessRun {
    pub code: i32,
    pub stderr: String,
    pub took: Duration,
    /// The output dir; removed when this drops unless [`HarnessRun::keep`] was called.
    pub dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
}

impl HarnessRun {
    /// `results.json`, parsed.
    pub fn results(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path.join("results.json"))
            .unwrap_or_else(|e| panic!("no results.json in {} ({e}); stderr:\n{}", self.path.display(), self.stderr));
        serde_json::from_str(&text).expect("results.json is JSON")
    }

    /// `history.jsonl`, parsed.
    pub fn history(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(self.path.join("history.jsonl")).expect("history.jsonl");
        history::parse_jsonl(&text).expect("history.jsonl parses")
    }

    /// Panics unless the run exited 0 (valid); on failure the output dir is kept and the
    /// anomalies, harness error and stderr are printed. Returns the results.
    pub fn expect_valid(&mut self) -> serde_json::Value {
        let results = self.results();
        if self.code != 0 {
            let kept = self.keep();
            panic!(
                "expected exit 0 (valid), got {}; output kept in {}\nanomalies: {:#}\nharness error: {}\n{}",
                self.code,
                kept.display(),
                results["checks"]["anomalies"],
                results["harness_error"],
                self.stderr
            );
        }
        results
    }

    /// Keeps the output dir (for a failure someone must look at); returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }
}

/// Held for the length of each harness run: every run starts a cluster of its own and judges it
/// by its timing, so runs take turns rather than share a 2-core machine with each other.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `geocache-jepsen test ARGS --out <temp dir> --bin <node under test>`; `args` is split
/// on whitespace. Runs take turns (see [`ONE_RUN_AT_A_TIME`]).
pub fn run_test(args: &str) -> HarnessRun {
    // A test that panicked while holding the lock leaves nothing behind that the next run needs.
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::Builder::new().prefix("geocache-jepsen-test-").tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let output = Command::new(HARNESS)
        .arg("test")
        .args(args.split_whitespace())
        .arg("--out")
        .arg(&path)
        .arg("--bin")
        .arg(NODE)
        .arg("--quiet")
        .env_remove("GEOCACHE_BIN")
        .output()
        .expect("run geocache-jepsen");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("geocache-jepsen took {took:?}; its stderr:\n{stderr}");
    HarnessRun { code: output.status.code().unwrap_or(-1), stderr, took, dir: Some(dir), path }
}

/// An operation paired from the history: its invocation and completion.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: Op,
    pub kind: EventKind,
    pub invoke_ns: u64,
    pub complete_ns: u64,
}

/// Pairs invocations with completions by process (operations never completed are left out).
pub fn calls(history: &[Event]) -> Vec<Call> {
    let mut pending = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in history {
        if e.kind == EventKind::Invoke {
            pending.insert(e.process, e.time_ns);
        } else if let Some(invoke_ns) = pending.remove(&e.process) {
            out.push(Call { op: e.op.clone(), kind: e.kind, invoke_ns, complete_ns: e.time_ns });
        }
    }
    out
}

/// `Ok` reads at `level` that were stale by more than `by`: the value they returned had been
/// overwritten by a write that began after it was written and was acknowledged more than `by`
/// before the read began (or they returned absent more than `by` after an acknowledged write).
/// Replication lag in a healthy cluster is milliseconds, so with `by` of a second these are
/// reads a partition made stale. Returns their invocation times.
pub fn reads_stale_by(history: &[Event], level: ReadLevel, by: Duration) -> Vec<u64> {
    let by = by.as_nanos() as u64;
    let calls = calls(history);
    let writes: Vec<(&str, &str, &Call)> = calls
        .iter()
        .filter(|c| c.kind == EventKind::Ok)
        .filter_map(|c| match &c.op {
            Op::Write { key, value } => Some((key.as_str(), value.as_str(), c)),
            Op::Cas { key, to, .. } => Some((key.as_str(), to.as_str(), c)),
            Op::Set { key, value, .. } => Some((key.as_str(), value.as_str(), c)),
            // Register histories have no deletes; this helper does not reason about them.
            Op::Read { .. } | Op::Delete { .. } => None,
        })
        .collect();
    let mut stale = Vec::new();
    for read in calls.iter().filter(|c| c.kind == EventKind::Ok) {
        let Op::Read { key, level: l, value, .. } = &read.op else { continue };
        if *l != level {
            continue;
        }
        let acked_before = |w: &Call| w.complete_ns + by < read.invoke_ns;
        let overwritten = match value {
            None => writes.iter().any(|(k, _, w)| k == key && acked_before(w)),
            Some(v) => {
                let Some((_, _, written)) = writes.iter().find(|(k, val, _)| k == key && val == v) else { continue };
                writes.iter().any(|(k, _, w)| k == key && w.invoke_ns > written.complete_ns && acked_before(w))
            }
        };
        if overwritten {
            stale.push(read.invoke_ns);
        }
    }
    stale
}

/// The `[start_ns, end_ns)` spans of the fault windows in `results`.
pub fn fault_spans(results: &serde_json::Value) -> Vec<(u64, u64)> {
    results["faults"]
        .as_array()
        .expect("faults is a list")
        .iter()
        .map(|w| (w["start_ns"].as_u64().unwrap(), w["end_ns"].as_u64().unwrap_or(u64::MAX)))
        .collect()
}

/// Node logs in the output dir.
pub fn node_logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("nodes"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}
