//! `geocache-compare`: the command line over [`geocache_compare::run`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use geocache_compare::{Settings, Workload};
use geocache_node::cli::parse_duration;

/// Runs geocache (3 voters), etcd (3 members) and Redis (1 node) side by side on this machine,
/// drives each with the same load generator and workloads, and prints a markdown table of their
/// figures, the ratios, and issue 9's goals.
///
/// Every server listens on 127.0.0.1 only and keeps its data in a temp dir; all of them are
/// stopped and their data removed when this ends (Ctrl-C included). etcd and redis-server come
/// from the Debian packages etcd-server and redis-server: if they are missing and this runs as
/// root where apt-get exists, they are installed first; otherwise it says what to install.
///
/// Workloads (every key written once to every system first, 100-byte values by default):
/// writes (geocache vs etcd, both at their leader), write-1 (one client at the leader, compared
/// by p50), linearizable-reads (geocache linearizable vs etcd's default linearizable Range, both
/// spread over their 3 nodes), stale-reads (geocache stale over its 3 nodes vs Redis GET).
/// etcd fsyncs every commit; geocache (sled) does not fsync per write.
#[derive(Parser, Debug)]
#[command(name = "geocache-compare", version, verbatim_doc_comment)]
struct Args {
    /// The geocache binary to compare [default: `geocache` next to this program, i.e.
    /// target/release/geocache when run with `cargo run --release`].
    #[arg(long)]
    geocache_bin: Option<PathBuf>,
    /// How long each system runs each workload (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How many times to run every workload; the table shows each run's ratio.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Run only these workloads (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Concurrent clients of every workload but write-1, each with its own connection and one
    /// request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Distinct keys, drawn uniformly.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seed of the key choices (the same for every system).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Clients share one connection per node (geocache: one client per region; etcd: one per
    /// member; Redis: one), as the tasks of one application process would, instead of each
    /// client having its own.
    #[arg(long)]
    shared_connections: bool,
    /// Print one JSON object instead of the markdown table.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("geocache-compare: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(compare(args));
    runtime.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code)
}

async fn compare(args: Args) -> i32 {
    let geocache_bin = match args.geocache_bin {
        Some(bin) => bin,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("geocache"),
            Err(e) => {
                eprintln!("geocache-compare: cannot find this program's directory ({e}); pass --geocache-bin");
                return 2;
            }
        },
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "geocache-compare: this is a debug build, and the load generator shares the machine with the \
             servers: for figures, use `cargo run --release -p geocache-compare`"
        );
    }
    let settings = Settings {
        geocache_bin,
        duration: args.duration,
        runs: args.runs,
        only: args.only,
        clients: args.clients,
        keys: args.keys,
        value_size: args.value_size,
        seed: args.seed,
        shared_connections: args.shared_connections,
    };
    // Dropping the comparison's future on Ctrl-C kills every server and removes its data.
    let outcome = tokio::select! {
        outcome = geocache_compare::run(&settings) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ngeocache-compare: interrupted; stopping every server");
            return 130;
        }
    };
    match outcome {
        Ok(comparison) if args.json => {
            println!("{}", comparison.json());
            0
        }
        Ok(comparison) => {
            print!("{}", comparison.markdown());
            0
        }
        Err(e) => {
            eprintln!("geocache-compare: {e}");
            2
        }
    }
}
