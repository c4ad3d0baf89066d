//! The `geocache` binary: parses the command line, sets up logging, and hands over to the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = geocache_node::cli::Cli::parse();
    // Servers log at info by default; one-shot commands stay quiet unless RUST_LOG says otherwise.
    let default = if matches!(cli.command, geocache_node::cli::Command::Serve(_)) { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let code = geocache_node::cli::run(cli).await;
    std::process::exit(code);
}
