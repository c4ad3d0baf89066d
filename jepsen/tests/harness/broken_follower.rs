//! Acceptance: a follower that skips the read index (the node's `read-skip-read-index` fault
//! point, test builds only) serves linearizable reads from its lagging local state; the harness
//! must report the history invalid (exit 1).
//!
//! Every node is started with `FAILPOINTS=read-skip-read-index=return` (it acts only on a
//! non-leader, so whichever node leads, the other two are broken); workers' reads are homed
//! round-robin, so two thirds of them land on broken followers. No nemesis: 100 ms one-way
//! delay on every node-to-node link makes the followers learn of each commit a round trip after
//! the leader acknowledged it, which is enough for reads right after a write to miss it.

use crate::common;

use common::run_test;

#[test]
fn a_follower_skipping_the_read_index_is_caught() {
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis none --workload register --read-consistency linearizable --time 15s ",
        "--recovery 0s --latency 100ms --op-timeout 2s --rate 60 --concurrency 6 --seed 3 ",
        "--check-budget 20s --node-failpoints all=read-skip-read-index=return",
    ));
    let results = run.results();
    if run.code != 1 {
        let kept = run.keep();
        panic!("expected exit 1 (invalid), got {}; output kept in {}\n{}", run.code, kept.display(), run.stderr);
    }
    assert_eq!(results["valid"], serde_json::json!(false));
    assert!(results.get("harness_error").is_none(), "{results:#}");
    let anomalies = results["checks"]["anomalies"].as_array().expect("anomalies");
    assert!(anomalies.iter().any(|a| a["checker"] == "linearizable"), "{anomalies:#?}");
    assert_eq!(results["config"]["node_failpoints"]["2"], "read-skip-read-index=return");
}
