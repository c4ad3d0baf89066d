//! The `crash-points` nemesis: nodes armed with the node's fault points (`fault-points` feature,
//! `FAILPOINTS`) die at them, come back on their data dirs, and linearizable reads stay
//! linearizable (exit 0). A failure with exit 1 is a finding about the node: the output dir is
//! kept; investigate, do not weaken the test.

use crate::common;

use common::run_test;

#[test]
fn linearizable_reads_stay_linearizable_when_nodes_die_at_fault_points() {
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis crash-points --workload register --read-consistency linearizable ",
        "--time 20s --fault-window 3s --heal-window 2s --recovery 2s --rate 60 --concurrency 6 ",
        "--seed 7 --check-budget 20s",
    ));
    let results = run.expect_valid();
    assert_eq!(results["valid"], serde_json::json!(true));
    let faults = results["faults"].as_array().expect("faults");
    assert!(!faults.is_empty());
    assert!(faults.iter().all(|f| f["nemesis"] == "crash-points" && f["fault_point"].is_string()), "{faults:#?}");
    // At least one node really died at its fault point, and the window says so.
    let exits = results["fault_point_exits"].as_array().expect("fault_point_exits");
    assert!(!exits.is_empty(), "no node died at a fault point: {faults:#?}");
    assert!(exits.iter().all(|e| e["status"].as_str().unwrap().contains("signal 6")), "{exits:#?}");
    assert!(faults.iter().any(|f| f["died"] == true), "{faults:#?}");
    assert!(results["figures"]["ops"]["all"]["ok"].as_u64().unwrap() > 300);
}
