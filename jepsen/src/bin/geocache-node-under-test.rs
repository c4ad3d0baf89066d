//! The harness's node binary: `geocache` with fault injection, which the binary users run never
//! has (see `geocache_node::faults`). Named fault points act as `FAILPOINTS` in the environment
//! says (the `fail` crate: `FAILPOINTS=log-flush-after=1*panic`); `GEOCACHE_CLOCK_OFFSET_MS`
//! shifts the node's wall clock at start; the admin call `SetClockOffset` shifts it while it
//! runs. Built inside this crate so the harness's integration tests can find it
//! (`CARGO_BIN_EXE_geocache-node-under-test`) and cargo rebuilds it whenever the node changes.

use geocache_node::faults::FaultInjection;

/// The `geocache` binary's allocator (see node/src/main.rs), so this node behaves like that one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Reads FAILPOINTS; it must outlive the node, which never returns from main.
    let scenario = fail::FailScenario::setup();
    std::mem::forget(scenario);
    let clock_offset_ms = match std::env::var("GEOCACHE_CLOCK_OFFSET_MS") {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("geocache-node-under-test: GEOCACHE_CLOCK_OFFSET_MS={v:?} is not a whole number of ms");
            std::process::exit(2)
        }),
        Err(_) => 0,
    };
    geocache_node::cli::main_with_fault_injection(FaultInjection {
        points: Box::new(|name| fail::eval(name, |_| ()).is_some()),
        clock_offset_ms,
    })
}
