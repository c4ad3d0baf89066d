//! The `geocache` binary; all of it lives in [`geocache_node::cli::main`].

fn main() {
    geocache_node::cli::main()
}
