//! The `geocache` binary; all of it lives in [`geocache_node::cli::main`].

/// mimalloc instead of glibc's malloc: a node allocates and frees small buffers on many threads
/// at once (gRPC frames, log entries, replies), and glibc's arenas showed up as about a sixth of
/// the leader's CPU under write load (docs/LAB_NOTES.md, "openraft 0.10").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    geocache_node::cli::main()
}
