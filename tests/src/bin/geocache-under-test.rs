//! The `geocache` binary, built again inside this crate so its integration tests can find it
//! (`CARGO_BIN_EXE_geocache-under-test`) and cargo rebuilds it whenever the node changes.

fn main() {
    geocache_node::cli::main()
}
