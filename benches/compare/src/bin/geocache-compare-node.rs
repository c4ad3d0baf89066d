//! The `geocache` binary, built again inside this crate so its test can start real nodes
//! (`CARGO_BIN_EXE_geocache-compare-node`) and cargo rebuilds it whenever the node changes.

fn main() {
    geocache_node::cli::main()
}
