//! Acceptance: with `--tls` every node runs with mutual TLS between members and TLS on its
//! client port (a throwaway CA in the output dir), the workload, the nemesis and the final
//! phase reach the nodes over TLS, and the run stays valid under partitions and `kill -9`.
//!
//! If this fails with exit 1, the harness found an anomaly with TLS on: a finding about the
//! node, not a flaky test. The output dir is kept and its path printed.

use crate::common;

use common::{node_logs, run_test};

#[test]
fn a_tls_cluster_stays_linearizable_under_partition_and_kill() {
    let mut run = run_test(concat!(
        "--tls --nodes 3 --nemesis partition,kill --workload register ",
        "--read-consistency linearizable --time 15s --fault-window 3s --heal-window 2s ",
        "--recovery 2s --rate 50 --concurrency 5 --seed 11 --check-budget 20s",
    ));
    let results = run.expect_valid();
    assert_eq!(results["config"]["tls"], serde_json::json!(true), "{:#}", results["config"]);
    let faults = results["faults"].as_array().expect("faults");
    for kind in ["partition", "kill"] {
        assert!(faults.iter().any(|f| f["nemesis"] == kind), "no {kind} window in {faults:#?}");
    }
    let figures = &results["figures"];
    for kind in ["read", "write", "cas"] {
        assert!(figures["ops"][kind]["ok"].as_u64().unwrap() > 0, "no ok {kind}: {figures:#}");
    }
    // Every node ran with TLS on both listeners, and the CA the clients trusted is in the run.
    assert!(run.path.join("tls").join("ca.pem").exists());
    for log in node_logs(&run.path) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("--tls-cert"), "{} was started without TLS", log.display());
        assert!(text.contains("tls=true"), "{} did not run with TLS", log.display());
    }
}

#[test]
fn tls_with_the_redis_protocol_is_refused_as_a_usage_error() {
    let out = std::process::Command::new(common::HARNESS)
        .args(["test", "--tls", "--protocol", "resp"])
        .env("GEOCACHE_BIN", "/bin/true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls"), "{stderr}");
}
