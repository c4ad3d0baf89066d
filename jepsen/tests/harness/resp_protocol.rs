//! Acceptance: `--protocol resp` runs the workloads through the nodes' Redis-protocol ports and
//! the checkers judge them exactly as they judge gRPC runs: the register workload (reads at a
//! bounded level, writes; no cas over RESP) on a healthy cluster, and the cache workload (GET,
//! `SET ... PX`, DEL, read-your-writes pins through `CLIENT MINVERSION`) under partitions and
//! `kill -9`, are valid.
//!
//! If a run fails with exit 1, the harness found an anomaly through the RESP port: a finding
//! about the node (or about the RESP client's mapping in src/client.rs), not a flaky test. The
//! output dir is kept and its path printed; investigate, do not weaken the test.

use crate::common;

use std::time::Duration;

use common::{node_logs, run_test, HarnessRun};
use geocache_jepsen::checker::durability::FINAL_PROCESS_BASE;
use geocache_jepsen::history::{EventKind, Op, ReadLevel};

/// What every RESP run must show: the config says RESP, every node was started with a RESP port
/// and served it, and the workload's reads and writes succeeded.
fn assert_ran_over_resp(run: &HarnessRun, results: &serde_json::Value, write_kind: &str) {
    assert_eq!(results["config"]["register"]["protocol"], "resp", "{:#}", results["config"]);
    for log in node_logs(&run.path) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("--resp-listen 127.0.0.1:"), "{} has no RESP port", log.display());
        assert!(text.contains("serving RESP"), "{} never served RESP", log.display());
    }
    let counts = &results["checks"]["op_counts"];
    for kind in ["read", write_kind] {
        assert!(counts[kind]["ok"].as_u64().unwrap() > 0, "no ok {kind}: {counts:#}");
    }
    assert_eq!(counts["cas"]["ok"].as_u64().unwrap_or(0), 0, "a cas over RESP: {counts:#}");
    // Read-your-writes ran: reads after a worker's own write carried CLIENT MINVERSION.
    let ryw = &results["checks"]["read_your_writes"];
    assert!(ryw["pinned_reads"].as_u64().unwrap() > 0, "no pinned read: {ryw:#}");
    assert_eq!((&ryw["valid"], &ryw["violations"]), (&serde_json::json!(true), &serde_json::json!(0)), "{ryw:#}");
    assert_eq!(results["node_exits"], serde_json::json!([]), "a node died on its own");
}

#[test]
fn the_register_workload_over_resp_is_valid_with_bounded_reads() {
    let mut run = run_test(concat!(
        "--protocol resp --nodes 3 --nemesis none --workload register --read-consistency bounded:250ms ",
        "--time 6s --recovery 1s --rate 60 --concurrency 6 --seed 3 --check-budget 20s",
    ));
    let results = run.expect_valid();
    assert_ran_over_resp(&run, &results, "write");
    // Every workload read was issued at the connection's level (the final phase's are the
    // harness's own, linearizable), and a healthy cluster answered them.
    let history = run.history();
    let reads: Vec<_> =
        history.iter().filter(|e| e.process < FINAL_PROCESS_BASE && matches!(e.op, Op::Read { .. })).collect();
    assert!(reads.iter().all(|e| matches!(&e.op, Op::Read { level, .. } if *level == ReadLevel::Bounded(250))));
    let reads_ok = reads.iter().filter(|e| e.kind == EventKind::Ok).count();
    assert!(reads_ok > 50, "only {reads_ok} ok reads");
    assert!(run.took < Duration::from_secs(40), "took {:?}", run.took);
}

#[test]
fn the_cache_workload_over_resp_is_valid_under_partition_and_kill() {
    let mut run = run_test(concat!(
        "--protocol resp --nodes 3 --nemesis partition,kill --workload cache --read-consistency linearizable ",
        "--time 14s --fault-window 3s --heal-window 2s --recovery 2s --rate 60 --concurrency 6 ",
        "--keys 10 --seed 7 --check-budget 20s",
    ));
    let results = run.expect_valid();
    assert_ran_over_resp(&run, &results, "set");
    let counts = &results["checks"]["op_counts"];
    assert!(counts["delete"]["ok"].as_u64().unwrap() > 0, "no ok DEL: {counts:#}");
    let faults = results["faults"].as_array().expect("faults");
    for kind in ["partition", "kill"] {
        assert!(faults.iter().any(|f| f["nemesis"] == kind), "no {kind} window in {faults:#?}");
    }
    // TTLs went through `SET ... PX`: reads saw entries expire, none early.
    let ttl = &results["checks"]["ttl"];
    assert!(ttl["expired_reads"].as_u64().unwrap() > 0, "no read saw an expiry: {ttl:#}");
    assert_eq!(ttl["early_expiries"], 0);
    assert_eq!(results["checks"]["durability"]["valid"], serde_json::json!(true));
    // The faults cost operations, and each was recorded with the RESP client's reason (an error
    // reply's prefix, or what happened to the connection), never a gRPC client's.
    let history = run.history();
    // (The final phase's reads are the harness's own, over gRPC.)
    let workload = |e: &&geocache_jepsen::history::Event| e.process < FINAL_PROCESS_BASE;
    let reasons: Vec<&str> = history.iter().filter(workload).filter_map(|e| e.error.as_deref()).collect();
    assert!(!reasons.is_empty(), "no operation failed under partition and kill");
    let resp_shaped = |r: &str| {
        [
            "TRYAGAIN",
            "STALE",
            "TIMEOUT",
            "ERR ",
            "OOM",
            "timed out",
            "connect to ",
            "connection: ",
            "no time left",
            "CLIENT READLEVEL",
            "unexpected reply",
            "expected OK",
            "not applied",
        ]
        .iter()
        .any(|p| r.starts_with(p))
    };
    let other: Vec<&&str> = reasons.iter().filter(|r| !resp_shaped(r)).collect();
    assert!(other.is_empty(), "reasons not from the RESP client: {other:?}");
    assert!(run.took < Duration::from_secs(50), "took {:?}", run.took);
}
