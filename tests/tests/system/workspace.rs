//! The workspace as a newcomer meets it: `cargo run --release -- dev`, the README's first
//! command, must know which binary to run. cargo picks among the default members' binaries, so
//! there must be exactly one: `geocache`.

use std::process::Command;

#[test]
fn cargo_run_at_the_top_level_means_the_geocache_binary() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path", workspace])
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let defaults: Vec<&str> = metadata["workspace_default_members"]
        .as_array()
        .expect("default members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let binaries: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| defaults.contains(&p["id"].as_str().unwrap_or_default()))
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(binaries, ["geocache"], "`cargo run` at the top level must have exactly one binary to run");
}
