//! Acceptance: the cache workload (get, set with a TTL, delete) under partitions and `kill -9`,
//! with linearizable reads, is valid: linearizable, no entry gone before its TTL, no acknowledged
//! write lost. And the TTL path really ran: reads found keys absent because their TTL had passed.
//!
//! If this fails with exit 1, the harness found an anomaly (an `early-expiry` anomaly is an entry
//! that vanished before its TTL): a finding about the node, not a flaky test. The output dir is
//! kept and its path printed; investigate, do not weaken the test.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{calls, run_test, Call};
use geocache_jepsen::history::{EventKind, Op, Pin};

/// `Ok` reads that found a key absent after its TTL had passed, judged from the history alone:
/// the key's last acknowledged set before the read began had a TTL, the read began at least that
/// TTL after the set was invoked, and no other set or delete of the key was invoked between the
/// set's invocation and the read's completion (so nothing but expiry made it absent).
fn reads_after_expiry(calls: &[Call]) -> usize {
    let mut by_key: HashMap<&str, Vec<&Call>> = HashMap::new();
    for c in calls {
        by_key.entry(c.op.key()).or_default().push(c);
    }
    let mut expired = 0;
    for ops in by_key.values() {
        for read in ops.iter().filter(|c| c.kind == EventKind::Ok) {
            let Op::Read { value: None, .. } = read.op else { continue };
            let last_set = ops
                .iter()
                .filter(|c| c.kind == EventKind::Ok && c.complete_ns < read.invoke_ns)
                .filter(|c| matches!(c.op, Op::Set { .. }))
                .max_by_key(|c| c.complete_ns);
            let Some(set) = last_set else { continue };
            let Op::Set { ttl_ms: Some(ttl), .. } = set.op else { continue };
            let expired_by = set.invoke_ns + ttl * 1_000_000;
            let interfering = ops.iter().any(|c| {
                matches!(c.op, Op::Set { .. } | Op::Delete { .. })
                    && c.kind != EventKind::Fail
                    && !std::ptr::eq(*c, *set)
                    && c.invoke_ns >= set.invoke_ns
                    && c.invoke_ns <= read.complete_ns
            });
            if read.invoke_ns >= expired_by && !interfering {
                expired += 1;
            }
        }
    }
    expired
}

#[test]
fn cache_workload_is_valid_under_partition_and_kill_and_entries_expire() {
    let mut run = run_test(concat!(
        "--nodes 3 --nemesis partition,kill --workload cache --read-consistency linearizable ",
        "--time 18s --fault-window 3s --heal-window 2s --recovery 2s --rate 60 --concurrency 6 ",
        "--keys 10 --ttl-range 200ms..2s --seed 7 --check-budget 20s",
    ));
    let results = run.expect_valid();
    assert_eq!(results["checks"]["valid"], serde_json::json!(true));
    assert_eq!(results["checks"]["anomalies"], serde_json::json!([]));
    assert_eq!(results["node_exits"], serde_json::json!([]), "a node died on its own");
    let faults = results["faults"].as_array().expect("faults");
    for kind in ["partition", "kill"] {
        assert!(faults.iter().any(|f| f["nemesis"] == kind), "no {kind} window in {faults:#?}");
    }

    // Every kind of cache operation succeeded, and the final phase judged durability.
    let counts = &results["checks"]["op_counts"];
    for kind in ["read", "set", "delete"] {
        assert!(counts[kind]["ok"].as_u64().unwrap() > 0, "no ok {kind}: {counts:#}");
    }
    assert_eq!(counts["write"]["ok"], 0, "the cache workload sets, it does not write: {counts:#}");
    assert_eq!(results["checks"]["durability"]["valid"], serde_json::json!(true));

    // Read-your-writes ran: reads after a worker's own set or delete carried its `min_version`
    // (the history names the pin), and none returned anything older.
    let ryw = &results["checks"]["read_your_writes"];
    eprintln!("{} pinned reads judged, {} violations", ryw["pinned_reads"], ryw["violations"]);
    assert!(ryw["pinned_reads"].as_u64().unwrap() > 0, "no pinned read: {ryw:#}");
    assert_eq!((&ryw["valid"], &ryw["violations"]), (&serde_json::json!(true), &serde_json::json!(0)), "{ryw:#}");

    // The TTL path ran: reads found keys absent after their TTL, by the checker's count and by
    // this test's own reading of the history.
    let ttl = &results["checks"]["ttl"];
    assert!(ttl["sets_with_ttl"].as_u64().unwrap() > 0, "{ttl:#}");
    assert!(ttl["expired_reads"].as_u64().unwrap() > 0, "no read saw an expiry: {ttl:#}");
    assert_eq!(ttl["early_expiries"], 0);
    let history = run.history();
    let pinned_to = |delete| {
        history.iter().any(|e| {
            e.kind == EventKind::Ok
                && matches!(&e.op, Op::Read { after: Some(pin), .. } if matches!(pin, Pin::Delete(_)) == delete)
        })
    };
    assert!(pinned_to(false) && pinned_to(true), "no read pinned to a set, or none to a delete");
    let sets: Vec<Option<u64>> = history
        .iter()
        .filter_map(|e| match &e.op {
            Op::Set { ttl_ms, .. } if e.kind == EventKind::Invoke => Some(*ttl_ms),
            _ => None,
        })
        .collect();
    assert!(sets.iter().any(Option::is_none), "no set without a TTL");
    assert!(sets.iter().flatten().all(|t| (200..=2000).contains(t)), "a TTL outside the range: {sets:?}");
    let expired = reads_after_expiry(&calls(&history));
    eprintln!("{expired} reads found a key absent after its TTL; the checker counted {}", ttl["expired_reads"]);
    assert!(expired > 0, "no read found a key absent after its TTL");
    assert!(run.took < Duration::from_secs(60), "took {:?}", run.took);
}
