//! Test harness for geocache integration tests: real `geocache` processes on loopback ports, each
//! with its own temporary data dir, killed (`kill -9`) when the harness drops.
//!
//! Starting, killing and waiting on processes is `geocache_node::launcher`'s (ports, regions, data
//! dirs, the `serve` flags, `eventually`, `wait_for_leader`); this adds the test-side view: a
//! table of nodes by id, clients, and the CLI. Tests talk to the cluster through
//! `geocache-client` (and the raw gRPC types only where a test must craft a request the client
//! would never send), and read the nodes' Prometheus metrics with [`scrape`], a plain HTTP GET. Nothing here sleeps to synchronise: every wait polls with a deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use geocache_node::launcher::{self, AdminChannel, NodeSpec};
pub use geocache_node::tls::cert::{self, CertPair};
use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;

pub use geocache_node::launcher::{eventually, ClientAccess, REGIONS};

/// `RUST_LOG` of test nodes.
const NODE_LOG_FILTER: &str = "info,openraft=warn";

/// One `geocache serve` process (or the place one ran).
pub struct NodeProcess {
    pub id: u64,
    /// Client address (`Cache`, `Admin`).
    pub addr: String,
    /// Peer address (`Raft`, member-to-member calls).
    pub peer_addr: String,
    pub region: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// How it starts; its extra args are fixed at its first spawn.
    spec: NodeSpec,
    /// Whether it was ever spawned (a [`TestCluster::reserve`]d node takes its args at its first spawn).
    started: bool,
    process: Option<launcher::NodeProcess>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn member(&self) -> pb::Member {
        self.spec.member()
    }
}

/// A cluster of real processes. Dropping it kills every process.
pub struct TestCluster {
    bin: PathBuf,
    /// Declared before `dir`: the processes die before their data dirs are removed.
    pub nodes: BTreeMap<u64, NodeProcess>,
    /// The cluster CA, once [`TestCluster::enable_tls`] made it.
    ca: Option<CertPair>,
    /// The tokens file and the admin token the cluster's own calls use, once
    /// [`TestCluster::enable_tokens`] wrote them.
    tokens: Option<(PathBuf, String)>,
    /// How this harness's own admin calls and clients reach the client ports.
    access: ClientAccess,
    /// The CA certificate (PEM) clients trust, once [`TestCluster::trust_ca`] was called.
    trusted_ca: Option<String>,
    dir: tempfile::TempDir,
}

/// A free loopback port (see [`launcher::free_port`]); `spawn` of a node whose port was taken
/// meanwhile fails to listen, visibly.
pub fn free_port() -> u16 {
    launcher::free_port().expect("bind 127.0.0.1:0")
}

/// Runs the `geocache` CLI `bin` with `--endpoint endpoint` (via `GEOCACHE_ENDPOINT`) and `args`.
pub fn run_cli(bin: &Path, endpoint: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("GEOCACHE_ENDPOINT", endpoint)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the geocache CLI")
}

impl TestCluster {
    /// An empty cluster directory; add nodes with [`TestCluster::spawn`].
    pub fn new(bin: impl Into<PathBuf>) -> Result<TestCluster> {
        let dir = tempfile::Builder::new().prefix("geocache-test-").tempdir()?;
        Ok(TestCluster {
            bin: bin.into(),
            nodes: BTreeMap::new(),
            ca: None,
            tokens: None,
            access: ClientAccess::default(),
            trusted_ca: None,
            dir,
        })
    }

    /// Like [`TestCluster::start_with`], with mutual TLS between the nodes: a CA made for this
    /// cluster ([`TestCluster::enable_tls`]) and a certificate for each node.
    pub async fn start_secure(bin: impl Into<PathBuf>, n: u64, extra_args: &[&str]) -> Result<TestCluster> {
        let mut cluster = TestCluster::new(bin)?;
        cluster.enable_tls()?;
        for id in 1..=n {
            cluster.spawn(id, extra_args)?;
        }
        cluster.init(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    /// Makes this cluster's CA in [`TestCluster::tls_dir`]: every node first spawned afterwards
    /// gets a certificate it signed (for 127.0.0.1) and the `--tls-*` flags, unless its own args
    /// name a `--tls-cert` already.
    pub fn enable_tls(&mut self) -> Result<()> {
        let ca = cert::new_ca("geocache test CA", 1)?;
        cert::write_pair(&self.tls_dir(), cert::CA_STEM, &ca)?;
        self.trust_ca(&ca.cert_pem);
        self.ca = Some(ca);
        Ok(())
    }

    /// Dial the client ports of nodes first spawned afterwards over TLS, trusting the CA
    /// certificate `ca_pem` (for nodes started with TLS files of the test's own making).
    pub fn trust_ca(&mut self, ca_pem: &str) {
        self.access = self.access.clone().with_ca(ca_pem.as_bytes());
        self.trusted_ca = Some(ca_pem.to_string());
    }

    /// How this harness reaches node `id`'s client port from now on (e.g. a node whose
    /// certificate another CA signed).
    pub fn set_node_access(&mut self, id: u64, access: ClientAccess) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.spec.access = access;
        }
    }

    /// Writes a tokens file of `(role, token)` lines: every node first spawned afterwards gets
    /// `--tokens FILE`, and this harness's own calls (init, status, [`TestCluster::client`]) use
    /// the first `admin` token, which must be there. Returns the file's path.
    pub fn enable_tokens(&mut self, tokens: &[(&str, &str)]) -> Result<PathBuf> {
        let admin = tokens.iter().find(|(role, _)| *role == "admin").ok_or_else(|| anyhow!("no admin token"))?.1;
        let path = self.dir.path().join("tokens");
        let text: String = tokens.iter().map(|(role, token)| format!("{role} {token}\n")).collect();
        std::fs::write(&path, text)?;
        self.access = self.access.clone().with_token(admin);
        self.tokens = Some((path.clone(), admin.to_string()));
        Ok(path)
    }

    /// How this harness reaches the client ports (TLS trust, admin token).
    pub fn access(&self) -> &ClientAccess {
        &self.access
    }

    /// A client builder for `endpoints`, trusting the cluster CA and carrying the admin token
    /// when the cluster has them.
    pub fn client_builder(&self, endpoints: impl IntoIterator<Item = String>) -> geocache_client::ClientBuilder {
        let mut builder = geocache_client::Client::builder().endpoints(endpoints);
        if let Some(ca_pem) = &self.trusted_ca {
            builder = builder.tls_ca_pem(ca_pem.as_bytes().to_vec());
        }
        if let Some((_, admin)) = &self.tokens {
            builder = builder.token(admin.clone());
        }
        builder
    }

    /// Where the cluster's CA and node certificates are.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// The cluster CA's certificate and key, if it has one.
    pub fn ca(&self) -> Option<&CertPair> {
        self.ca.as_ref()
    }

    /// The `--tls-*` flags of node `id` under this cluster's CA, making its certificate first.
    fn tls_args(&self, id: u64) -> Result<Vec<String>> {
        let ca = self.ca.as_ref().ok_or_else(|| anyhow!("no CA: call enable_tls first"))?;
        let dir = self.tls_dir();
        let name = format!("node-{id}");
        let (cert_path, key_path) = cert::paths(&dir, &name);
        if !cert_path.exists() {
            cert::write_pair(&dir, &name, &cert::new_member(ca, &name, &["127.0.0.1".to_string()], 1)?)?;
        }
        Ok(tls_flags(&cert_path, &key_path, &cert::paths(&dir, cert::CA_STEM).0))
    }

    /// Starts `n` voters (ids 1..=n, regions in turn), initialises them as one cluster through
    /// node 1, and waits until every node knows the leader.
    pub async fn start(bin: impl Into<PathBuf>, n: u64) -> Result<TestCluster> {
        Self::start_with(bin, n, &[]).await
    }

    /// Like [`TestCluster::start`], every node started with `extra_args` (e.g. `--max-entries 3`).
    pub async fn start_with(bin: impl Into<PathBuf>, n: u64, extra_args: &[&str]) -> Result<TestCluster> {
        let mut cluster = TestCluster::new(bin)?;
        for id in 1..=n {
            cluster.spawn(id, extra_args)?;
        }
        cluster.init(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    /// Like [`TestCluster::start_with`], every node also serving the Redis protocol on its own
    /// loopback port ([`TestCluster::resp_addr`]).
    pub async fn start_with_resp(bin: impl Into<PathBuf>, n: u64, extra_args: &[&str]) -> Result<TestCluster> {
        Self::start_listening(bin, n, extra_args, Listeners { resp: true, metrics: false }).await
    }

    /// Like [`TestCluster::start_with`], every node also serving the ports `listeners` asks for,
    /// each on its own loopback port ([`TestCluster::resp_addr`], [`TestCluster::metrics_addr`]).
    pub async fn start_listening(
        bin: impl Into<PathBuf>,
        n: u64,
        extra_args: &[&str],
        listeners: Listeners,
    ) -> Result<TestCluster> {
        TestCluster::new(bin)?.launch(n, extra_args, listeners).await
    }

    /// Like [`TestCluster::start_listening`], with TLS as [`TestCluster::start_secure`] gives it
    /// (the client and Redis ports speak TLS too).
    pub async fn start_secure_listening(
        bin: impl Into<PathBuf>,
        n: u64,
        extra_args: &[&str],
        listeners: Listeners,
    ) -> Result<TestCluster> {
        let mut cluster = TestCluster::new(bin)?;
        cluster.enable_tls()?;
        cluster.launch(n, extra_args, listeners).await
    }

    /// Like [`TestCluster::start_listening`], every node requiring the `(role, token)` pairs
    /// (`--tokens`, [`TestCluster::enable_tokens`]); the harness's own calls use the admin one.
    pub async fn start_with_tokens(
        bin: impl Into<PathBuf>,
        n: u64,
        tokens: &[(&str, &str)],
        extra_args: &[&str],
        listeners: Listeners,
    ) -> Result<TestCluster> {
        let mut cluster = TestCluster::new(bin)?;
        cluster.enable_tokens(tokens)?;
        cluster.launch(n, extra_args, listeners).await
    }

    /// Starts nodes 1..=n with `extra_args` and the ports `listeners` asks for, and initialises
    /// them as one cluster.
    async fn launch(mut self, n: u64, extra_args: &[&str], listeners: Listeners) -> Result<TestCluster> {
        let loopback = || std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        for id in 1..=n {
            self.reserve(id);
            let node = self.nodes.get_mut(&id).expect("reserved above");
            node.spec.resp_addr = listeners.resp.then(loopback);
            node.spec.metrics_addr = listeners.metrics.then(loopback);
            self.spawn(id, extra_args)?;
        }
        self.init(Duration::from_secs(20)).await?;
        Ok(self)
    }

    /// Node `id`'s Redis-protocol address, if it serves one.
    pub fn resp_addr(&self, id: u64) -> Option<String> {
        self.nodes[&id].spec.resp_addr.map(|a| a.to_string())
    }

    /// Node `id`'s Prometheus metrics address, if it serves one.
    pub fn metrics_addr(&self, id: u64) -> Option<String> {
        self.nodes[&id].spec.metrics_addr.map(|a| a.to_string())
    }

    /// One scrape of node `id`'s `/metrics`.
    pub async fn scrape(&self, id: u64) -> Result<Scrape> {
        scrape(&self.metrics_addr(id).ok_or_else(|| anyhow!("node {id} serves no metrics"))?).await
    }

    /// Initialises every known node as one cluster of voters through node 1 and waits for a
    /// leader they agree on.
    pub async fn init(&self, within: Duration) -> Result<u64> {
        let members = self.nodes.values().map(NodeProcess::member).collect();
        let first = &self.nodes.get(&1).ok_or_else(|| anyhow!("no node 1"))?.spec;
        launcher::init(first, members, within).await.context("init")?;
        self.wait_for_leader(within).await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Picks node `id`'s port, region and data dir without starting it, and returns its address
    /// (so other nodes' flags, e.g. netsim routes, can name it before it runs). Its first
    /// [`TestCluster::spawn`] gives it its args. A known node keeps what it has.
    pub fn reserve(&mut self, id: u64) -> String {
        let dir = self.dir.path().to_path_buf();
        let node = self.nodes.entry(id).or_insert_with(|| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
            let spec = NodeSpec::in_dir(&dir, id, addr, &REGIONS).with_peer(peer).with_env("RUST_LOG", NODE_LOG_FILTER);
            NodeProcess {
                id,
                addr: addr.to_string(),
                peer_addr: peer.to_string(),
                region: spec.region.clone(),
                data_dir: spec.data_dir.clone(),
                log_path: spec.log_path.clone().expect("in_dir sets a log"),
                spec,
                started: false,
                process: None,
            }
        });
        node.addr.clone()
    }

    /// Starts node `id` (new or reserved: fresh port and data dir, started with `extra_args`;
    /// known: same port, data dir and args as its first start).
    pub fn spawn(&mut self, id: u64, extra_args: &[&str]) -> Result<()> {
        self.reserve(id);
        let first_start = !self.nodes[&id].started;
        let own_tls = extra_args.contains(&"--tls-cert");
        let mut security = if first_start && self.ca.is_some() && !own_tls { self.tls_args(id)? } else { Vec::new() };
        if let Some((path, _)) = self.tokens.as_ref().filter(|_| first_start && !extra_args.contains(&"--tokens")) {
            security.extend(["--tokens".to_string(), path.display().to_string()]);
        }
        let access = self.access.clone();
        let node = self.nodes.get_mut(&id).expect("reserved above");
        if node.process.is_some() {
            bail!("node {id} is already running");
        }
        if first_start {
            node.spec.extra_args = extra_args.iter().map(|s| s.to_string()).chain(security).collect();
            node.spec.access = access;
        }
        node.process = Some(launcher::NodeProcess::spawn(&self.bin, &node.spec, &[], &[])?);
        node.started = true;
        Ok(())
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let process = node.process.take().ok_or_else(|| anyhow!("node {id} is not running"))?;
        process.kill()?;
        Ok(())
    }

    /// Restarts a killed node on the same port and data dir.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        self.spawn(id, &[])
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// Node `id`'s peer address (its Raft listener).
    pub fn peer_addr(&self, id: u64) -> String {
        self.nodes[&id].peer_addr.clone()
    }

    /// Addresses of all running nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().filter(|n| n.is_running()).map(|n| n.addr.clone()).collect()
    }

    /// A client over every running node.
    pub async fn client(&self) -> Result<geocache_client::Client> {
        Ok(self.client_builder(self.endpoints()).build().await?)
    }

    /// A client that knows only node `id`.
    pub async fn client_of(&self, id: u64) -> Result<geocache_client::Client> {
        // Discovery off: the client must not learn other nodes and read from them instead.
        Ok(self.client_builder([self.addr(id)]).discovery(false).build().await?)
    }

    /// A raw admin client to node `id`, once it accepts connections. Its calls may take up to a
    /// minute (a test sets each request's own deadline).
    pub async fn admin(&self, id: u64) -> Result<AdminClient<AdminChannel>> {
        let addr = self.addr(id);
        Ok(eventually(&format!("node {id} to accept connections"), Duration::from_secs(20), || async {
            launcher::admin_with_call_timeout(&addr, &self.nodes[&id].spec.access, Duration::from_secs(60)).await.ok()
        })
        .await?)
    }

    /// Node `id`'s own view of itself.
    pub async fn local_status(&self, id: u64) -> Option<pb::StatusResponse> {
        launcher::local_status(&self.addr(id), &self.nodes[&id].spec.access).await
    }

    /// Waits until every running node names the same leader, and that leader is running.
    pub async fn wait_for_leader(&self, within: Duration) -> Result<u64> {
        let running: Vec<(u64, String)> =
            self.nodes.values().filter(|n| n.is_running()).map(|n| (n.id, n.addr.clone())).collect();
        Ok(launcher::wait_for_leader(|| running.clone(), &self.access, within).await?)
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, within: Duration) -> Result<()> {
        Ok(eventually(&format!("node {id} to apply index {index}"), within, || async {
            let status = self.local_status(id).await?;
            (status.nodes.first()?.applied >= index).then_some(())
        })
        .await?)
    }

    /// Runs the `geocache` CLI against node `id` with `args`.
    pub fn cli(&self, id: u64, args: &[&str]) -> Output {
        self.cli_at(&self.addr(id), args)
    }

    /// Runs the `geocache` CLI with `--endpoint endpoint` and `args`.
    pub fn cli_at(&self, endpoint: &str, args: &[&str]) -> Output {
        run_cli(&self.bin, endpoint, args)
    }

    /// The log of node `id` (for failure messages).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log_path).unwrap_or_default()
    }
}

/// `--tls-cert CERT --tls-key KEY --tls-ca CA`.
pub fn tls_flags(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--tls-ca".into(),
        ca.display().to_string(),
    ]
}

/// Which ports besides gRPC the nodes of [`TestCluster::start_listening`] serve.
#[derive(Clone, Copy, Debug, Default)]
pub struct Listeners {
    /// The Redis protocol (`--resp-listen`).
    pub resp: bool,
    /// Prometheus metrics (`--metrics-listen`).
    pub metrics: bool,
}

/// How long one scrape may take, connection included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET http://addr/metrics`, by hand over a tokio socket (one HTTP/1.1 request with
/// `Connection: close`, read to the end): the body of a `200 OK`, or an error naming what came.
pub async fn scrape(addr: &str) -> Result<Scrape> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .with_context(|| format!("scraping {addr} took over {SCRAPE_TIMEOUT:?}"))??;
    let answer = String::from_utf8(answer).context("the metrics answer is not UTF-8")?;
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no HTTP header end in {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("scraping {addr}: {head}");
    }
    Ok(Scrape { text: body.to_string() })
}

/// The Prometheus text one scrape returned.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    /// The value of the series written exactly `series`: a name, with its labels as the node
    /// renders them (e.g. `geocache_raft_term`, `geocache_writes_total{api="grpc",result="ok"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The sum over every series of the metric `name` whose labels include all of `labels`
    /// (each `key="value"`); 0 if there is none.
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (series_labels, value) = match rest.strip_prefix('{') {
                    Some(rest) => rest.split_once("} ")?,
                    None => ("", rest.strip_prefix(' ')?),
                };
                labels
                    .iter()
                    .all(|l| series_labels.split(',').any(|s| s == *l))
                    .then(|| value.trim().parse::<f64>().ok())?
            })
            .sum()
    }
}

/// Output of a CLI run as (exit code, stdout, stderr).
pub fn outcome(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

/// A `geocache dev` process on free loopback ports, killed (and reaped) when dropped.
pub struct DevRun {
    child: std::process::Child,
    /// Client port of node 1 (node N: base + N - 1); likewise for the other ports.
    pub base: u16,
    pub peer_base: u16,
    pub resp_base: u16,
    pub metrics_base: u16,
}

impl DevRun {
    /// Starts `bin dev ARGS` with every port run picked free (peer ports too: base + 100 may be
    /// another test's), and returns it with the lines it printed up to its `Ctrl-C` line
    /// (within 60 s).
    pub async fn start(bin: &Path, args: &[&str]) -> Result<(DevRun, Vec<String>)> {
        use std::io::{BufRead, BufReader};
        let (base, peer_base, resp_base, metrics_base) =
            (free_port_run(), free_port_run(), free_port_run(), free_port_run());
        let mut child = Command::new(bin)
            .arg("dev")
            .args(args)
            .args(["--base-port", &base.to_string(), "--peer-base-port", &peer_base.to_string()])
            .args(["--resp-base-port", &resp_base.to_string(), "--metrics-base-port", &metrics_base.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("dev's stdout")?;
        // Owned from here: killed whatever happens below.
        let run = DevRun { child, base, peer_base, resp_base, metrics_base };
        let lines = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().map_while(|l| l.ok()).take_while(|l| !l.contains("Ctrl-C")).collect()
        });
        let lines =
            tokio::time::timeout(Duration::from_secs(60), lines).await.context("dev did not come up in 60 s")??;
        Ok((run, lines))
    }

    /// The dev process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of three consecutive free loopback ports (for `geocache dev`'s port runs).
pub fn free_port_run() -> u16 {
    loop {
        let base = free_port();
        if base < 60000 && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}
