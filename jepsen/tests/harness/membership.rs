//! The `membership` nemesis: voters are demoted to learners, removed from the cluster and
//! demoted while a partition isolates a node, all while the register workload runs; each
//! window then makes every node a voter again. Linearizable reads stay linearizable (exit 0),
//! and every node ends as a voter with the same state. A failure with exit 1 is a finding about
//! the node: the output dir is kept; investigate, do not weaken the test.

use crate::common;

use common::run_test;

#[test]
fn linearizable_reads_stay_linearizable_while_voters_leave_and_return() {
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis membership --workload register --read-consistency linearizable ",
        "--time 22s --fault-window 3s --heal-window 1500ms --recovery 2s --rate 60 --concurrency 6 ",
        "--seed 5 --check-budget 20s",
    ));
    let results = run.expect_valid();
    let faults = results["faults"].as_array().expect("faults");
    assert!(faults.len() >= 3, "{faults:#?}");
    for fault in faults {
        assert_eq!(fault["nemesis"], "membership");
        // The change was made: the node named first left the voters.
        let node = &fault["nodes"][0];
        let voters = fault["membership"]["voters"].as_array().unwrap_or_else(|| panic!("membership: {fault:#}"));
        assert!(!voters.contains(node), "node {node} still a voter during {fault:#}");
        assert!(fault["end_ns"].is_u64(), "the window was closed: {fault:#}");
    }
    let shape = |name: &str| faults.iter().any(|f| f["fault"].as_str().unwrap().contains(name));
    assert!(shape("membership remove") && shape("membership demote"), "{faults:#?}");
    assert_eq!(
        results["checks"]["convergence"]["valid"],
        serde_json::json!(true),
        "{:#}",
        results["checks"]["convergence"]
    );
    assert!(results["figures"]["ops"]["all"]["ok"].as_u64().unwrap() > 300);
}
