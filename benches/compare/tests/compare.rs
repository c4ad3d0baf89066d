//! The comparison against the real systems: geocache (this crate's own build of the binary),
//! etcd and Redis, installed first by the same function the command uses if the machine lacks
//! them. Tiny cells (a second each, a few clients, a few keys): this checks that every system
//! starts, takes load and lands in the table, not how fast anything is.

use std::process::Command;
use std::time::Duration;

use geocache_compare::workloads::FSYNC_NOTE;
use geocache_compare::{ensure_peers_installed, Settings, Workload};

const NODE_BIN: &str = env!("CARGO_BIN_EXE_geocache-compare-node");
const COMPARE_BIN: &str = env!("CARGO_BIN_EXE_geocache-compare");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_comparison_measures_every_system_in_every_row() {
    ensure_peers_installed().expect("etcd and redis-server, installed if missing");
    let settings = Settings { duration: Duration::from_secs(1), clients: 4, keys: 200, ..Settings::new(NODE_BIN) };
    let comparison = geocache_compare::run(&settings).await.expect("the comparison runs");

    let measured: Vec<Workload> = comparison.cells.iter().map(|c| c.workload).collect();
    assert_eq!(measured, Workload::ALL, "one cell per workload, in order");
    for cell in &comparison.cells {
        for side in [&cell.geocache, &cell.peer] {
            assert!(side.ops > 0, "{:?}: {} measured nothing: {side:?}", cell.workload, side.system);
            assert_eq!(side.read_misses, 0, "{:?}: every key was written first: {side:?}", cell.workload);
        }
        assert!(cell.ratio().is_some_and(|r| r > 0.0), "{cell:?}");
    }
    assert!(comparison.cells[0].peer.system.starts_with("etcd "), "{:?}", comparison.cells[0].peer);
    assert!(comparison.cells[3].peer.system.starts_with("Redis "), "{:?}", comparison.cells[3].peer);

    let table = comparison.markdown();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| workload")).collect();
    assert_eq!(rows.len(), 4, "{table}");
    for (row, workload) in rows.iter().zip(Workload::ALL) {
        assert!(row.starts_with(&format!("| {}", workload.title(4))), "{table}");
        assert!(row.contains(workload.goal()), "{table}");
        assert_eq!(row.contains(FSYNC_NOTE), workload.is_write(), "{table}");
    }
    let json = comparison.json();
    assert_eq!(json["cells"].as_array().map(Vec::len), Some(4), "{json:#}");
}

#[test]
fn help_names_the_systems_and_every_flag() {
    let out = Command::new(COMPARE_BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for text in ["etcd", "Redis", "127.0.0.1", "--duration", "--runs", "--only", "--json", "--geocache-bin", "fsync"] {
        assert!(help.contains(text), "--help lacks {text}:\n{help}");
    }
}

#[test]
fn a_missing_geocache_binary_is_named_before_anything_starts() {
    let out = Command::new(COMPARE_BIN).args(["--geocache-bin", "/nonexistent/geocache"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no geocache binary at /nonexistent/geocache") && err.contains("cargo build --release"),
        "{err}"
    );
}
