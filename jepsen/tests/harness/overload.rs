//! Acceptance for overload mode (`--overload`): a flood of writes to fresh keys beside the
//! checked workload, judged for liveness as well as safety.
//!
//! * Under the flood with a pause nemesis, the history stays valid, the flood is acknowledged
//!   throughout, and no term change happens outside a fault (a busy cluster keeps its leader).
//!   The commit-gap limit is generous (5 s) because CI machines are small and shared; what the
//!   test guards is that writes never stop and load alone never deposes the leader.
//! * A node that stops applying for 4 s (the `apply-after` fault point, made to sleep once)
//!   with no fault in force is caught: the liveness checker reports the stall (exit 1).

use crate::common;

use common::run_test;

#[test]
fn a_flooded_cluster_keeps_its_leader_and_keeps_committing() {
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis pause --workload cache --read-consistency bounded:250ms --time 20s ",
        "--fault-window 3s --heal-window 3s --recovery 2s --rate 60 --concurrency 6 --seed 5 ",
        "--overload --overload-clients 16 --max-commit-gap 5s",
    ));
    let results = run.expect_valid();
    let liveness = &results["checks"]["liveness"];
    assert_eq!(liveness["valid"], serde_json::json!(true), "{liveness:#}");
    assert!(liveness["samples"].as_u64().unwrap() > 20, "{liveness:#}");
    assert!(liveness["healthy_leader_changes"].as_array().unwrap().is_empty(), "{liveness:#}");
    let flood = &results["flood"];
    assert!(flood["acknowledged"].as_u64().unwrap() > 500, "{flood:#}");
    assert!(liveness["commits"].as_u64().unwrap() >= flood["acknowledged"].as_u64().unwrap(), "{liveness:#}");
}

#[test]
fn a_stall_with_no_fault_in_force_is_caught() {
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis none --workload cache --time 15s --recovery 1s --rate 40 --concurrency 4 ",
        "--seed 9 --no-final-checks --overload --overload-clients 8 --max-commit-gap 2s ",
        "--node-failpoints all=apply-after=300*off->1*sleep(4000)",
    ));
    let results = run.results();
    if run.code != 1 {
        let kept = run.keep();
        panic!("expected exit 1 (invalid), got {}; output kept in {}\n{}", run.code, kept.display(), run.stderr);
    }
    let liveness = &results["checks"]["liveness"];
    assert_eq!(liveness["valid"], serde_json::json!(false), "{liveness:#}");
    assert!(liveness["longest_gap_ms"].as_f64().unwrap() > 2000.0, "{liveness:#}");
    let anomalies = results["checks"]["anomalies"].as_array().expect("anomalies");
    assert!(anomalies.iter().any(|a| a["checker"] == "liveness"), "{anomalies:#?}");
}
