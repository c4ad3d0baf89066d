//! Acceptance: the harness catches a real weakness. With `stale` reads, a replica cut off by a
//! partition keeps answering from its old state while the majority moves on; the history is
//! then not linearizable, and the harness must say so (exit 1, `valid: false`).
//!
//! Three nodes, so every partition cuts one node off, and workers' reads are pinned to their home
//! replica (spread round-robin), so the isolated node always has readers. The schedule is
//! aggressive: 5 s partitions every 7 s, with short Raft timeouts so that writes go on on the
//! majority side for most of each partition even when it cut the leader off.

use crate::common;

use std::time::Duration;

use common::{fault_spans, node_logs, reads_stale_by, run_test};
use geocache_jepsen::history::{Op, ReadLevel};

#[test]
fn stale_reads_under_a_partition_are_caught() {
    // Quick elections: when the partition cuts off the leader, the majority elects a new
    // one within about a second and goes on writing for most of the window.
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis partition --workload register --read-consistency stale --time 15s ",
        "--fault-window 5s --heal-window 2s --recovery 2s --rate 80 --concurrency 6 --seed 1 ",
        "--check-budget 20s --heartbeat 100ms --election-timeout 500ms",
    ));
    let results = run.results();
    if run.code != 1 {
        let kept = run.keep();
        panic!("expected exit 1 (invalid), got {} ; output kept in {}\n{}", run.code, kept.display(), run.stderr);
    }
    assert_eq!(results["valid"], serde_json::json!(false));
    assert!(results.get("harness_error").is_none(), "{results:#}");
    assert_eq!(results["model"], "linearizable");
    let anomalies = results["checks"]["anomalies"].as_array().expect("anomalies");
    assert!(!anomalies.is_empty());
    assert!(anomalies.iter().any(|a| a["checker"] == "linearizable"), "{anomalies:#?}");
    // Invalid for the right reason: stale reads may lag, but a read carrying the `min_version` of
    // the worker's own write (the isolated replica waits for it, or the read times out) never
    // returned anything older.
    let ryw = &results["checks"]["read_your_writes"];
    eprintln!("{} pinned reads judged, {} violations", ryw["pinned_reads"], ryw["violations"]);
    assert!(ryw["pinned_reads"].as_u64().unwrap() > 0, "no pinned read: {ryw:#}");
    assert_eq!(ryw["violations"], 0, "{ryw:#}");
    assert!(anomalies.iter().all(|a| a["checker"] != "read-your-writes"), "{anomalies:#?}");

    // The history keeps the level reads were really issued at: the workload's reads are stale,
    // only the reads a cas makes first are linearizable.
    let history = run.history();
    assert!(history.iter().any(|e| matches!(e.op, Op::Read { level: ReadLevel::Stale, .. })));

    // And the partition is what made them stale: some read missed a write acknowledged more
    // than a second earlier (replication lag alone is milliseconds), during a partition.
    let spans = fault_spans(&results);
    assert!(spans.len() >= 2, "{spans:?}");
    let very_stale = reads_stale_by(&history, ReadLevel::Stale, Duration::from_secs(1));
    let during = very_stale.iter().filter(|t| spans.iter().any(|(s, e)| *s <= **t && **t < *e)).count();
    eprintln!("{} reads over 1 s stale, {during} of them during a partition", very_stale.len());
    assert!(during > 0, "no read was over a second stale during a partition");

    assert_eq!(node_logs(&run.path).len(), 3);
    assert!(run.took < Duration::from_secs(60), "took {:?}", run.took);
}
