//! The `geocache` binary, built again inside this crate so the harness's integration tests can
//! find it (`CARGO_BIN_EXE_geocache-node-under-test`) and cargo rebuilds it whenever the node
//! changes. Not for use outside the tests: run the real `geocache` binary instead.

fn main() {
    geocache_node::cli::main()
}
