//! geocache side by side with etcd and Redis (issue 9): one command starts all three on
//! loopback, drives them with the same load engine (`geocache_node::loadgen`) and the same
//! workloads, and prints a markdown table of figures, ratios and issue 9's goals.
//!
//! Owns: making sure the peers are installed ([`install`]), starting and stopping them
//! ([`process`], [`etcd`], [`redis_server`]), the etcd and Redis backends of the load engine,
//! geocache's clients as the comparison builds them ([`geocache`]: the nodes themselves are
//! started by `geocache_node::launcher`), which comparisons exist and their goals
//! ([`workloads`]), and the table ([`table`]). The loop, histograms and progress line are the
//! load engine's.
//!
//! Invariants:
//! * Every server listens on 127.0.0.1 only, on ports picked free at start; data and logs live
//!   in temp dirs, removed after the processes are killed (SIGKILL, then reaped) on drop.
//! * Nothing waits by sleeping: every start polls with a deadline ([`START_TIMEOUT`]) and a
//!   process that dies meanwhile fails the wait at once, with its log.
//! * Within a run, each workload measures geocache and then its peer, back to back, with the
//!   same plan (clients, keys, values, duration, seed); every key is written once to every
//!   system before any read.
//! * A write comparison always carries [`workloads::FSYNC_NOTE`]: etcd fsyncs every commit, sled
//!   does not, so the two do not buy the same durability.

pub mod error;
pub mod etcd;
pub mod geocache;
pub mod install;
pub mod process;
pub mod redis_server;
pub mod table;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use geocache_client::ReadOptions;
use geocache_node::loadgen::{self, Backend, GeocacheBackend, KeyDist, Plan, Report};

pub use error::{Error, Result};
pub use install::ensure_peers_installed;
pub use table::{Cell, Comparison, Figures, Setup};
pub use workloads::Workload;

use crate::etcd::{EtcdCluster, EtcdKv};
use crate::geocache::GeocacheCluster;
use crate::redis_server::{RedisConnection, RedisServer};
use crate::workloads::Peer;

/// How long each system may take to start and agree on a leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to compare, and how.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `geocache` binary to run.
    pub geocache_bin: PathBuf,
    /// How long each system runs each workload.
    pub duration: Duration,
    /// How many times to run every workload.
    pub runs: u32,
    /// The workloads; empty means all of them.
    pub only: Vec<Workload>,
    /// Clients of every workload but the 1-client write.
    pub clients: usize,
    /// Distinct keys (uniform), each written once before the reads.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Seed of the key choices (the same for every system).
    pub seed: u64,
    /// Clients share one connection per node (per member, per server) instead of each having
    /// its own.
    pub shared_connections: bool,
}

impl Settings {
    /// Issue 9's setup: 10 s per cell, one run, every workload, 64 clients, 10,000 keys,
    /// 100-byte values.
    pub fn new(geocache_bin: impl Into<PathBuf>) -> Settings {
        Settings {
            geocache_bin: geocache_bin.into(),
            duration: Duration::from_secs(10),
            runs: 1,
            only: Vec::new(),
            clients: 64,
            keys: 10_000,
            value_size: 100,
            seed: 0,
            shared_connections: false,
        }
    }

    fn workloads(&self) -> Vec<Workload> {
        let mut chosen = if self.only.is_empty() { Workload::ALL.to_vec() } else { self.only.clone() };
        chosen.sort();
        chosen.dedup();
        chosen
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidSettings(what.to_string()));
        if self.clients == 0 {
            return bad("--clients must be at least 1");
        }
        if self.keys == 0 {
            return bad("--keys must be at least 1");
        }
        if self.runs == 0 {
            return bad("--runs must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than 0");
        }
        if !self.geocache_bin.is_file() {
            return Err(Error::GeocacheBinary {
                path: self.geocache_bin.clone(),
                hint: "build it with `cargo build --release -p geocache-node`, or pass --geocache-bin PATH".into(),
            });
        }
        Ok(())
    }
}

/// The systems under load, alive while this lives.
struct Systems {
    geocache: GeocacheCluster,
    etcd: Option<EtcdCluster>,
    redis: Option<RedisServer>,
}

/// Runs the comparison: installs the peers if needed ([`ensure_peers_installed`]), starts
/// geocache and the peers the chosen workloads need, writes every key once to each, runs every
/// workload `runs` times (geocache, then its peer), stops everything and returns the figures.
/// Progress goes to stderr.
pub async fn run(settings: &Settings) -> Result<Comparison> {
    settings.check()?;
    let workloads = settings.workloads();
    let need = |peer: Peer| workloads.iter().any(|w| w.peer() == peer);
    let programs = ensure_peers_installed()?;

    let mut starting = vec!["geocache (3 voters)"];
    if need(Peer::Etcd) {
        starting.push("etcd (3 members)");
    }
    if need(Peer::Redis) {
        starting.push("Redis (1 node)");
    }
    eprintln!("geocache-compare: starting {} on 127.0.0.1...", starting.join(", "));
    let (geocache, etcd, redis) = tokio::try_join!(
        GeocacheCluster::start(&settings.geocache_bin, START_TIMEOUT),
        async {
            match need(Peer::Etcd) {
                true => EtcdCluster::start(&programs.etcd, START_TIMEOUT).await.map(Some),
                false => Ok(None),
            }
        },
        async {
            match need(Peer::Redis) {
                true => RedisServer::start(&programs.redis_server, START_TIMEOUT).await.map(Some),
                false => Ok(None),
            }
        },
    )?;
    let systems = Systems { geocache, etcd, redis };
    let setup = Setup {
        clients: settings.clients,
        keys: settings.keys,
        value_size: settings.value_size,
        duration: settings.duration,
        runs: settings.runs,
        shared_connections: settings.shared_connections,
        geocache_bin: settings.geocache_bin.display().to_string(),
        etcd_version: systems.etcd.as_ref().map(|e| e.version.clone()),
        redis_version: systems.redis.as_ref().map(|r| r.version.clone()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    if workloads.iter().any(|w| !w.is_write()) {
        preload_all(&systems, settings).await?;
    }
    let mut cells = Vec::new();
    for run in 1..=settings.runs {
        for &workload in &workloads {
            cells.push(measure(&systems, settings, workload, run).await?);
        }
    }
    Ok(Comparison { setup, cells })
}

/// Writes every key once to every system started, so that reads hit.
async fn preload_all(systems: &Systems, settings: &Settings) -> Result<()> {
    let (keys, size, clients) = (settings.keys, settings.value_size, settings.clients);
    eprintln!("geocache-compare: writing {keys} keys to geocache...");
    let backends = systems.geocache.clients(clients, ReadOptions::linearizable(), settings.shared_connections).await?;
    loadgen::preload(&backends, keys, size).await.map_err(|source| Error::Load { system: "geocache", source })?;
    if let Some(etcd) = &systems.etcd {
        eprintln!("geocache-compare: writing {keys} keys to etcd...");
        let leader = etcd.leader_url().await?;
        let backends = etcd_clients(std::iter::repeat_n(&leader, clients), settings.shared_connections).await?;
        loadgen::preload(&backends, keys, size).await.map_err(|source| Error::Load { system: "etcd", source })?;
    }
    if let Some(redis) = &systems.redis {
        eprintln!("geocache-compare: writing {keys} keys to Redis...");
        let backends = redis_clients(redis, clients, settings.shared_connections).await?;
        loadgen::preload(&backends, keys, size).await.map_err(|source| Error::Load { system: "Redis", source })?;
    }
    Ok(())
}

/// One cell: `workload` on geocache, then on its peer.
async fn measure(systems: &Systems, settings: &Settings, workload: Workload, run: u32) -> Result<Cell> {
    let clients = workload.clients(settings.clients);
    let op = if workload.is_write() { "write" } else { "read" };
    let read = match workload {
        Workload::StaleReads => ReadOptions::stale(),
        _ => ReadOptions::linearizable(),
    };
    let geocache_backends: Vec<GeocacheBackend> =
        systems.geocache.clients(clients, read, settings.shared_connections).await?;
    let report = load(&geocache_backends, settings, workload, run, "geocache").await?;
    let geocache = Figures::of("geocache", &report, op);
    drop(geocache_backends);

    let peer = match workload.peer() {
        Peer::Etcd => {
            let etcd = systems.etcd.as_ref().expect("etcd is started for its workloads");
            let backends = if workload.is_write() {
                let leader = etcd.leader_url().await?;
                etcd_clients(std::iter::repeat_n(&leader, clients), settings.shared_connections).await?
            } else {
                etcd_clients(etcd.client_urls().iter().cycle().take(clients), settings.shared_connections).await?
            };
            let report = load(&backends, settings, workload, run, "etcd").await?;
            Figures::of(format!("etcd {}", etcd.version), &report, op)
        }
        Peer::Redis => {
            let redis = systems.redis.as_ref().expect("Redis is started for its workloads");
            let backends = redis_clients(redis, clients, settings.shared_connections).await?;
            let report = load(&backends, settings, workload, run, "Redis").await?;
            Figures::of(format!("Redis {}", redis.version), &report, op)
        }
    };
    Ok(Cell { workload, run, geocache, peer })
}

/// Runs `workload` on `backends` (one per client), with a progress line naming it.
async fn load<B: Backend>(
    backends: &[B],
    settings: &Settings,
    workload: Workload,
    run: u32,
    system: &'static str,
) -> Result<Report> {
    let plan = Plan {
        name: workload.id().to_string(),
        workload: if workload.is_write() { loadgen::Workload::Write } else { loadgen::Workload::Read },
        duration: settings.duration,
        rate: None,
        value_size: settings.value_size,
        keys: settings.keys,
        key_dist: KeyDist::Uniform,
        fill: None,
        seed: settings.seed,
        progress: Some(format!("[run {run}/{}] {}, {system:<8}", settings.runs, workload.title(settings.clients))),
    };
    loadgen::run(backends, &plan).await.map_err(|source| Error::Load { system, source })
}

/// A connection to each of `urls`: one each, or with `shared` one per distinct URL.
async fn etcd_clients<'a>(urls: impl Iterator<Item = &'a String>, shared: bool) -> Result<Vec<EtcdKv>> {
    let mut opened: Vec<(&String, EtcdKv)> = Vec::new();
    let mut clients = Vec::new();
    for url in urls {
        if let Some((_, kv)) = opened.iter().find(|(u, _)| shared && *u == url) {
            clients.push(kv.clone());
            continue;
        }
        let kv = EtcdKv::connect(url).await.map_err(|message| Error::Connect { system: "etcd", message })?;
        opened.push((url, kv.clone()));
        clients.push(kv);
    }
    Ok(clients)
}

/// `n` connections to the Redis server, or with `shared` one multiplexed connection `n` times.
async fn redis_clients(redis: &RedisServer, n: usize, shared: bool) -> Result<Vec<RedisConnection>> {
    let mut clients: Vec<RedisConnection> = Vec::with_capacity(n);
    for _ in 0..n {
        let client = match clients.first() {
            Some(first) if shared => first.clone(),
            _ => RedisConnection::connect(redis.url())
                .await
                .map_err(|message| Error::Connect { system: "Redis", message })?,
        };
        clients.push(client);
    }
    Ok(clients)
}
