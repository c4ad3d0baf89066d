//! The command line: help, bad flags, and a harness error that must not look like a finding.

use crate::common;

use std::process::Command;

use common::{run_test, HARNESS};
use geocache_jepsen::history::EventKind;

#[test]
fn help_lists_the_flags() {
    let out = Command::new(HARNESS).args(["test", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--nodes",
        "--nemesis",
        "--read-consistency",
        "--time",
        "--rate",
        "--concurrency",
        "--seed",
        "--out",
        "--protocol",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_exit_2() {
    for args in
        [&["test", "--nemesis", "meteor"][..], &["test", "--read-consistency", "fresh"], &["test", "--nodes", "0"]]
    {
        let out = Command::new(HARNESS).args(args).env("GEOCACHE_BIN", "/bin/true").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_missing_node_binary_is_a_harness_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(HARNESS)
        .args(["test", "--time", "1s", "--quiet", "--bin", "/nonexistent/geocache", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HARNESS ERROR") && stderr.contains("/nonexistent/geocache"), "{stderr}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], "unknown");
    assert!(results["harness_error"].as_str().unwrap().contains("/nonexistent/geocache"), "{results:#}");
    assert!(results["checks"].is_null());
}

#[test]
fn a_quiet_cluster_with_no_faults_is_valid() {
    let run = run_test("--nodes 3 --nemesis none --time 3s --recovery 0s --rate 50");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let results = run.results();
    assert_eq!(results["valid"], serde_json::json!(true));
    assert_eq!(results["faults"], serde_json::json!([]));
    assert!(results["started_at"].is_string());
    assert!(run.history().len() > 100);
    // The final phase ran: every node was killed and restarted, every key read again, the
    // replicas' state hashes compared. (Its first run caught a restarted leader answering a
    // linearizable read from a stale commit point.)
    let checks = &results["checks"];
    assert_eq!(checks["durability"]["valid"], serde_json::json!(true), "{checks}");
    assert_eq!(checks["convergence"]["valid"], serde_json::json!(true), "{checks}");
    // The latency plot: an SVG with a marker per completed operation (and five in the legend)
    // and the final phase shaded.
    let svg = std::fs::read_to_string(run.path.join("latency.svg")).expect("latency.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{} bytes", svg.len());
    let completed = run.history().iter().filter(|e| e.kind != EventKind::Invoke).count();
    assert_eq!(svg.matches("<circle").count() + svg.matches("<polygon").count(), completed + 5);
    assert!(svg.contains("seconds since the test started") && svg.contains("final phase"));
    assert!(results["notes"].as_array().unwrap().iter().all(|n| !n.to_string().contains("latency.svg")), "{results}");
}
