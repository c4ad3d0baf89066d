//! The `geocache` command line: clap definitions, one subcommand per verb, and the thin glue that
//! turns each into a server run or a gRPC call to exactly the endpoint given.
//!
//! Contract of the client commands: every call has a deadline (`--timeout`, default 5 s) and never
//! hangs; success exits 0; `get` of a missing key prints `not found` to stderr and exits 1; any
//! error exits 2 with one line naming the cause.

mod bench;
mod cert;
mod client_cmds;
mod dev;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};
use crate::faults::FaultInjection;
use crate::state_machine::Limits;
use crate::types::NodeId;

/// geocache: a geo-distributed LRU cache with time expiration, replicated with Raft.
#[derive(Parser, Debug)]
#[command(name = "geocache", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node: the client and admin APIs on --listen, Raft and member-to-member calls on
    /// --peer-listen.
    Serve(Box<ServeArgs>),
    /// Start a local 3-node cluster (child processes on loopback) and keep it running until Ctrl-C.
    Dev(DevArgs),
    /// Bootstrap and change the cluster's membership, or show its status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Store a value.
    Set(SetArgs),
    /// Read a value (prints it to stdout; exit 1 if the key is missing).
    Get(GetArgs),
    /// Delete a key.
    #[command(alias = "delete")]
    Del(KeyArgs),
    /// Show a key's remaining time to live.
    Ttl(KeyArgs),
    /// Change a key's expiry (`--ttl`) or remove it (`--persist`).
    Expire(ExpireArgs),
    /// Load a running cluster through the Rust client and report ops/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Make a CA and member certificates for mutual TLS between nodes (--tls-cert, --tls-key,
    /// --tls-ca).
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

/// Where and how long a client command talks.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Node to send the request to.
    #[arg(long, env = "GEOCACHE_ENDPOINT", default_value = "127.0.0.1:7001", global = true)]
    pub endpoint: String,
    /// Deadline for the whole command (e.g. 500ms, 5s, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    /// Connect over TLS, trusting only this CA certificate (PEM): the cluster CA of a node
    /// started with --tls-ca (`geocache dev --secure` prints its path).
    #[arg(long, env = "GEOCACHE_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Bearer token for a cluster started with --tokens; its role decides what the command may
    /// do. Prefer the environment variable: a flag is visible to other users in `ps`.
    #[arg(long, env = "GEOCACHE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl Target {
    /// A client builder for `--endpoint`, with `--tls-ca` and `--token` applied.
    pub fn client_builder(&self) -> Result<geocache_client::ClientBuilder, String> {
        let mut builder = geocache_client::Client::builder().endpoints([self.endpoint.as_str()]);
        if let Some(path) = &self.tls_ca {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read --tls-ca {}: {e}", path.display()))?;
            builder = builder.tls_ca_pem(pem);
        }
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        Ok(builder)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// This node's id (non-zero, unique in the cluster, fixed for its data dir).
    #[arg(long, env = "GEOCACHE_ID")]
    pub id: NodeId,
    /// Region label stored in the membership (e.g. us-east).
    #[arg(long, env = "GEOCACHE_REGION", default_value = "local")]
    pub region: String,
    /// Client address to listen on: the Cache and Admin APIs (clients, the CLI, operators).
    /// A non-loopback address needs --tls-cert/--tls-key/--tls-ca or --insecure; client traffic
    /// itself is not authenticated yet.
    #[arg(long, env = "GEOCACHE_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// Peer address to listen on: Raft and every call members make to one another (forwarded
    /// writes and admin calls, read-index rounds). Only other members should reach it; with TLS
    /// it accepts only certificates signed by --tls-ca. Default: the host of --listen, port + 100.
    #[arg(long, env = "GEOCACHE_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Address other members dial to reach the peer listener (recorded in the membership).
    /// Default: --peer-listen, or with --advertise, its host at the --peer-listen port.
    #[arg(long, env = "GEOCACHE_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// This node's certificate (PEM), presented to other members both ways; it must be signed by
    /// --tls-ca and name the addresses members dial (`geocache cert node` makes one).
    #[arg(long, env = "GEOCACHE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM). Never logged.
    #[arg(long, env = "GEOCACHE_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): the peer listener accepts only members whose
    /// certificates it signed, and this node trusts only peers it signed.
    #[arg(long, env = "GEOCACHE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Allow a non-loopback --listen, --peer-listen or --resp-listen without TLS: anyone who
    /// reaches the peer port can then forge Raft messages. For trusted private networks only.
    #[arg(long)]
    pub insecure: bool,
    /// Require a token on the client port and the Redis port: FILE has one `ROLE TOKEN` per
    /// line, ROLE being read (get, ttl, status), write (plus set, del, expire, flush) or admin
    /// (plus membership and configure). gRPC clients send `authorization: Bearer TOKEN`; Redis
    /// clients `AUTH TOKEN`. Tokens are never logged. Default: no tokens, the ports are open.
    #[arg(long, env = "GEOCACHE_TOKENS_FILE", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Also serve the Redis protocol (RESP2 and RESP3) on this address, e.g. 127.0.0.1:6379.
    /// With --tls-*, it speaks TLS (like Redis 6+); with --tokens, clients must AUTH.
    #[arg(long, env = "GEOCACHE_RESP_LISTEN")]
    pub resp_listen: Option<SocketAddr>,
    /// Also serve Prometheus metrics over HTTP at http://ADDR/metrics, e.g. 127.0.0.1:9101.
    /// Loopback only unless anyone who reaches the address may read them.
    #[arg(long, env = "GEOCACHE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address clients dial to reach this node (default: --listen).
    #[arg(long, env = "GEOCACHE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory for the Raft log, vote and snapshots (sled).
    #[arg(long, env = "GEOCACHE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Cache capacity in entries, proposed when this node initialises the cluster (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_entries: u64,
    /// Cache capacity in bytes (key + value + 64 per entry), proposed at init (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_bytes: u64,
    /// Largest accepted key in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,
    /// Largest accepted value in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Route override ID=ADDR: reach node ID through ADDR (e.g. a latency proxy). Repeatable.
    #[arg(long = "route", value_parser = parse_route)]
    pub routes: Vec<(NodeId, String)>,
    /// Raft heartbeat interval.
    #[arg(long, default_value = "150ms", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Raft election timeout: the leader lease, and the longest a voter waits without leader
    /// contact before a pre-vote (it waits a random time between half of this and all of it).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub election_timeout: Duration,
    /// Longest a request may take inside the node.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Most connections open at once on each port (gRPC: clients, peers and admin together; the
    /// RESP port counts its own); more are closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Close a connection that has had no request in flight for this long (clients reconnect); on
    /// the RESP port also one that does not take its replies for this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Most client writes in flight at this node; one more is refused at once (gRPC
    /// RESOURCE_EXHAUSTED, RESP -TRYAGAIN overloaded), nothing applied, so clients back off
    /// instead of queueing past their deadlines.
    #[arg(long, default_value_t = 2048)]
    pub max_pending_writes: usize,
    /// Most linearizable and bounded reads in flight at this node (stale reads are not limited);
    /// one more is refused at once, as for writes.
    #[arg(long, default_value_t = 8192)]
    pub max_pending_reads: usize,
    /// How often to probe the leader for a read index (keeps the staleness bound fresh).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// Build a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Exit when standard input closes: lets a supervising process (`geocache dev`, the tests)
    /// take its nodes down with it even if it is killed with SIGKILL.
    #[arg(long, hide = true)]
    pub exit_with_stdin: bool,
}

impl ServeArgs {
    pub fn to_config(&self) -> Config {
        let mut config = Config::new(self.id, self.region.clone(), self.listen, self.data_dir.clone());
        if let Some(advertise) = &self.advertise {
            config.advertise = advertise.clone();
        }
        match self.peer_listen.or_else(|| crate::config::default_peer_addr(self.listen)) {
            Some(peer_listen) => {
                config.peer_listen = peer_listen;
                config.peer_advertise = match (&self.peer_advertise, &self.advertise) {
                    (Some(peer_advertise), _) => peer_advertise.clone(),
                    (None, Some(advertise)) => match advertise.rsplit_once(':') {
                        Some((host, _)) => format!("{host}:{}", peer_listen.port()),
                        None => String::new(),
                    },
                    (None, None) => peer_listen.to_string(),
                };
            }
            // No port 100 above --listen: validation asks for --peer-listen.
            None => config.peer_advertise = String::new(),
        }
        if let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            config.tls = Some(crate::tls::TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() });
        }
        config.insecure = self.insecure;
        config.tokens = self.tokens.clone();
        config.limits = Limits { max_entries: self.max_entries, max_bytes: self.max_bytes };
        config.max_key_bytes = self.max_key_bytes;
        config.max_value_bytes = self.max_value_bytes;
        config.routes = self.routes.iter().cloned().collect::<BTreeMap<_, _>>();
        config.heartbeat_interval = self.heartbeat;
        config.election_timeout = self.election_timeout;
        config.request_timeout = self.request_timeout;
        config.max_connections = self.max_connections;
        config.idle_timeout = self.idle_timeout;
        config.max_pending_writes = self.max_pending_writes;
        config.max_pending_reads = self.max_pending_reads;
        config.probe_interval = self.probe_interval;
        config.snapshot_every = self.snapshot_every;
        config.resp_listen = self.resp_listen;
        config.metrics_listen = self.metrics_listen;
        config
    }
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of voters to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Port of node 1; node N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Peer port of node 1 (Raft between the nodes); node N listens on peer-base-port + N - 1.
    /// Default: base-port + 100.
    #[arg(long)]
    pub peer_base_port: Option<u16>,
    /// Make a throwaway CA, a certificate per node and an admin token (in DATA_DIR/tls) and run
    /// the nodes with mutual TLS between them, TLS on the client and Redis ports, and --tokens.
    #[arg(long)]
    pub secure: bool,
    /// Redis-protocol port of node 1; node N serves RESP on resp-base-port + N - 1.
    #[arg(long, default_value_t = 6379)]
    pub resp_base_port: u16,
    /// Prometheus metrics port of node 1; node N serves http://127.0.0.1:PORT/metrics on
    /// metrics-base-port + N - 1.
    #[arg(long, default_value_t = 9101)]
    pub metrics_base_port: u16,
    /// Keep data here (reused on the next run). Default: a temporary directory removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cache capacity in entries (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_entries: u64,
    /// Also start this many learners (non-voting read replicas), regions in turn, after the voters.
    #[arg(long, default_value_t = 0)]
    pub learners: u64,
    /// Simulate distance between regions: one-way delay on every node-to-node link (clients are
    /// not delayed). One duration for every pair of distinct regions (80ms), or a list
    /// us-east:eu-west=80ms,us-east:ap-south=150ms,eu-west:ap-south=120ms.
    #[arg(long, value_name = "SPEC", value_parser = parse_latency_matrix)]
    pub wan_latency: Option<crate::netsim::LatencyMatrix>,
}

/// Parses a `--wan-latency` spec (`80ms` or `REGION:REGION=DURATION,...`).
fn parse_latency_matrix(s: &str) -> Result<crate::netsim::LatencyMatrix, String> {
    s.parse().map_err(|e: crate::netsim::MatrixError| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Initialise a new cluster. With no --member, a one-voter cluster of the endpoint node.
    Init {
        #[command(flatten)]
        target: Target,
        /// An initial voter, as ID=ADDR@REGION or ID=ADDR@REGION,peer=PEER_ADDR (ADDR is the
        /// client address; the peer address defaults to ADDR's host at port + 100). Repeatable;
        /// must include the endpoint node.
        #[arg(long = "member", value_parser = parse_member)]
        members: Vec<geocache_client::Member>,
    },
    /// Add a node: as a learner, wait until it has caught up, then promote it to voter.
    Add {
        #[command(flatten)]
        target: Target,
        /// The new node's id.
        #[arg(long)]
        id: NodeId,
        /// The new node's client gRPC address (--listen / --advertise).
        #[arg(long)]
        addr: String,
        /// The new node's peer address (--peer-listen / --peer-advertise). Default: the host
        /// of --addr at port + 100.
        #[arg(long)]
        peer_addr: Option<String>,
        /// The new node's region.
        #[arg(long)]
        region: String,
        /// Keep it a learner (a read replica that does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node (voter or learner) from the cluster.
    Remove {
        #[command(flatten)]
        target: Target,
        /// The node to remove.
        #[arg(long)]
        id: NodeId,
    },
    /// Show every member: id, address, region, role, term, applied index, lag.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change the replicated cache capacity; a limit not given stays as it is.
    #[command(group = clap::ArgGroup::new("limit").required(true).multiple(true).args(["max_entries", "max_bytes"]))]
    Configure {
        #[command(flatten)]
        target: Target,
        /// Most entries held at once (0 = unlimited).
        #[arg(long)]
        max_entries: Option<u64>,
        /// Most bytes held at once, key + value + 64 per entry (0 = unlimited).
        #[arg(long)]
        max_bytes: Option<u64>,
    },
}

#[derive(Args, Debug)]
pub struct SetArgs {
    #[command(flatten)]
    pub target: Target,
    pub key: String,
    pub value: String,
    /// Time to live (e.g. 30s, 5m, 1h30m). Omit for no expiry.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Only set if the key is absent.
    #[arg(long, conflicts_with_all = ["if_present", "if_version"])]
    pub if_absent: bool,
    /// Only set if the key is present.
    #[arg(long, conflicts_with = "if_version")]
    pub if_present: bool,
    /// Only set if the key currently has this version (compare-and-set).
    #[arg(long)]
    pub if_version: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ConsistencyArg {
    /// Sees every write acknowledged before the read began (one round trip to the leader's quorum).
    Linearizable,
    /// Served locally if the endpoint's staleness bound is within --max-staleness, else refused.
    Bounded,
    /// Whatever the endpoint has applied, however old (always answers while the node lives).
    Stale,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub target: Target,
    pub key: String,
    /// Read consistency.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
    pub consistency: ConsistencyArg,
    /// For `--consistency bounded`: the largest staleness accepted (e.g. 250ms).
    #[arg(long, value_parser = parse_duration, required_if_eq("consistency", "bounded"))]
    pub max_staleness: Option<Duration>,
    /// Wait until the endpoint has applied at least this version (read-your-writes).
    #[arg(long, default_value_t = 0)]
    pub min_version: u64,
    /// Also print the answer's metadata (version, expiry, node, region, applied index) to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub target: Target,
    pub key: String,
}

#[derive(Args, Debug)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub target: Target,
    pub key: String,
    /// New time to live.
    #[arg(long, value_parser = parse_duration, required_unless_present = "persist")]
    pub ttl: Option<Duration>,
    /// Remove the expiry.
    #[arg(long, conflicts_with = "ttl")]
    pub persist: bool,
}

/// Parses `30s`, `250ms`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 30s, 5m)"))
}

fn parse_route(s: &str) -> Result<(NodeId, String), String> {
    let (id, addr) = s.split_once('=').ok_or("expected ID=ADDR, e.g. 2=127.0.0.1:9002")?;
    let id = id.parse().map_err(|_| format!("bad node id {id:?}"))?;
    Ok((id, addr.to_string()))
}

fn parse_member(s: &str) -> Result<geocache_client::Member, String> {
    let hint = "expected ID=ADDR@REGION or ID=ADDR@REGION,peer=PEER_ADDR, e.g. 1=127.0.0.1:7001@us-east";
    let (id, rest) = s.split_once('=').ok_or(hint)?;
    let (rest, peer_addr) = match rest.split_once(",peer=") {
        Some((rest, peer)) if !peer.is_empty() => (rest, Some(peer)),
        Some(_) => return Err(hint.to_string()),
        None => (rest, None),
    };
    let (addr, region) = rest.rsplit_once('@').ok_or(hint)?;
    let id = id.parse().map_err(|_| format!("bad node id {id:?}; {hint}"))?;
    if addr.is_empty() || region.is_empty() {
        return Err(hint.to_string());
    }
    let member = geocache_client::Member::new(id, addr, region);
    Ok(match peer_addr {
        Some(peer) => member.with_peer_addr(peer),
        None => member,
    })
}

/// The whole `geocache` program: parse the command line, set up logging, run, exit.
/// Kept in the library so the integration tests can build an identical binary of their own.
pub fn main() -> ! {
    start(Cli::parse(), None)
}

/// The fault-injection harness's node program: `geocache` whose `serve` runs with `faults`
/// (named fault points, a clock offset, and the admin call that changes the offset). Only the
/// harness's own binary calls this; see [`crate::faults`].
pub fn main_with_fault_injection(faults: FaultInjection) -> ! {
    let clock_offset_ms = faults.clock_offset_ms;
    crate::faults::install(faults.points);
    start(Cli::parse(), Some(clock_offset_ms))
}

/// `fault_clock_offset_ms`: `Some` only in the harness build, which accepts fault injection.
fn start(cli: Cli, fault_clock_offset_ms: Option<i64>) -> ! {
    // Fail-stop: a panic anywhere (a bug, a corrupt snapshot, a fault point) ends the process
    // rather than leave a half-working node that could diverge; it restarts from its disk.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Except where the store turns sled's panic on a damaged file into a clear error.
        if crate::store::panic_is_caught_here() {
            return;
        }
        default_hook(info);
        std::process::abort();
    }));
    // Servers log at info by default; one-shot commands stay quiet unless RUST_LOG says otherwise.
    let default = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geocache: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(run(cli, fault_clock_offset_ms));
    // Don't wait for stray background tasks (e.g. lazily connecting channels) to finish.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    std::process::exit(code)
}

/// Runs a parsed command line; returns the process exit code.
async fn run(cli: Cli, fault_clock_offset_ms: Option<i64>) -> i32 {
    match cli.command {
        Command::Serve(args) => serve(*args, fault_clock_offset_ms).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cert(command) => cert::run(command),
        other => client_cmds::run(other).await,
    }
}

async fn serve(args: ServeArgs, fault_clock_offset_ms: Option<i64>) -> i32 {
    if args.exit_with_stdin {
        std::thread::spawn(|| {
            // Reads until EOF, i.e. until the parent holding the pipe's other end is gone.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    let mut config = args.to_config();
    if let Some(offset_ms) = fault_clock_offset_ms {
        config.fault_injection = true;
        config.clock_offset_ms = offset_ms;
    }
    if let Err(e) = config.validate() {
        eprintln!("geocache serve: {e}");
        return 2;
    }
    // Both listeners bound before anything else starts: a port in use fails the start at once.
    let mut bound = Vec::new();
    for (what, addr) in [("--listen", config.listen), ("--peer-listen", config.peer_listen)] {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => bound.push(l),
            Err(e) => {
                eprintln!("geocache serve: cannot listen on {addr} ({what}): {e}");
                return 2;
            }
        }
    }
    let peer = bound.pop().expect("bound above");
    let client = bound.pop().expect("bound above");
    let listeners = crate::server::Listeners { client, peer };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    match crate::server::run(config, listeners, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("geocache serve: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn member_and_route_parse() {
        use geocache_client::Member;
        assert_eq!(parse_member("1=127.0.0.1:7001@us-east").unwrap(), Member::new(1, "127.0.0.1:7001", "us-east"));
        assert_eq!(
            parse_member("1=127.0.0.1:7001@us-east,peer=127.0.0.1:9001").unwrap(),
            Member::new(1, "127.0.0.1:7001", "us-east").with_peer_addr("127.0.0.1:9001")
        );
        assert!(parse_member("1=127.0.0.1:7001@us-east,peer=").is_err());
        assert!(parse_member("1=127.0.0.1:7001").is_err());
        assert!(parse_member("x=a@b").is_err());
        assert_eq!(parse_route("2=127.0.0.1:9").unwrap(), (2, "127.0.0.1:9".into()));
    }

    #[test]
    fn endpoint_defaults_to_node_one() {
        let cli = Cli::try_parse_from(["geocache", "get", "k"]).unwrap();
        let Command::Get(args) = cli.command else { panic!() };
        assert_eq!(args.target.endpoint, "127.0.0.1:7001");
        assert_eq!(args.target.timeout, Duration::from_secs(5));
    }
}
