//! Test harness for geocache integration tests: real `geocache` processes on loopback ports, each
//! with its own temporary data dir, killed (`kill -9`) when the harness drops.
//!
//! Tests talk to the cluster through `geocache-client` (and the raw gRPC types only where a test
//! must craft a request the client would never send). Nothing here sleeps to synchronise: every
//! wait polls with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;

/// The regions test nodes are labelled with, in turn.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// One `geocache serve` process (or the place one ran).
pub struct NodeProcess {
    pub id: u64,
    pub addr: String,
    pub region: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    extra_args: Vec<String>,
    /// Whether it was ever spawned (a [`TestCluster::reserve`]d node takes its args at its first spawn).
    started: bool,
    child: Option<Child>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn member(&self) -> pb::Member {
        pb::Member { id: self.id, addr: self.addr.clone(), region: self.region.clone() }
    }
}

/// A cluster of real processes. Dropping it kills every process.
pub struct TestCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProcess>,
}

/// A free loopback port: bind port 0, read the port, release it. Another process could take it
/// in between; `spawn` retries on a bind failure for that reason.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// Polls `probe` until it returns `Some`, or fails after `within` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestCluster {
    /// An empty cluster directory; add nodes with [`TestCluster::spawn`].
    pub fn new(bin: impl Into<PathBuf>) -> Result<TestCluster> {
        let dir = tempfile::Builder::new().prefix("geocache-test-").tempdir()?;
        Ok(TestCluster { bin: bin.into(), dir, nodes: BTreeMap::new() })
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
        let members = cluster.nodes.values().map(NodeProcess::member).collect();
        let mut admin = cluster.admin(1).await?;
        admin.init(pb::InitRequest { members }).await.context("init")?;
        cluster.wait_for_leader(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Picks node `id`'s port, region and data dir without starting it, and returns its address
    /// (so other nodes' flags, e.g. netsim routes, can name it before it runs). Its first
    /// [`TestCluster::spawn`] gives it its args. A known node keeps what it has.
    pub fn reserve(&mut self, id: u64) -> String {
        let dir = self.dir.path().to_path_buf();
        let node = self.nodes.entry(id).or_insert_with(|| NodeProcess {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            region: REGIONS[((id - 1) as usize) % REGIONS.len()].to_string(),
            data_dir: dir.join(format!("node-{id}")),
            log_path: dir.join(format!("node-{id}.log")),
            extra_args: Vec::new(),
            started: false,
            child: None,
        });
        node.addr.clone()
    }

    /// Starts node `id` (new or reserved: fresh port and data dir, started with `extra_args`;
    /// known: same port, data dir and args as its first start).
    pub fn spawn(&mut self, id: u64, extra_args: &[&str]) -> Result<()> {
        self.reserve(id);
        let node = self.nodes.get_mut(&id).expect("reserved above");
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        if !node.started {
            node.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path)?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .args(["--id", &id.to_string(), "--region", &node.region, "--listen", &node.addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&node.extra_args)
            // If this test process dies without running Drop, the node exits with it.
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        node.child = Some(child);
        node.started = true;
        Ok(())
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let mut child = node.child.take().ok_or_else(|| anyhow!("node {id} is not running"))?;
        child.kill()?; // SIGKILL on unix
        child.wait()?;
        Ok(())
    }

    /// Restarts a killed node on the same port and data dir.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        self.spawn(id, &[])
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// Addresses of all running nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().filter(|n| n.is_running()).map(|n| n.addr.clone()).collect()
    }

    /// A client over every running node.
    pub async fn client(&self) -> Result<geocache_client::Client> {
        Ok(geocache_client::Client::connect(self.endpoints()).await?)
    }

    /// A client that knows only node `id`.
    pub async fn client_of(&self, id: u64) -> Result<geocache_client::Client> {
        // Discovery off: the client must not learn other nodes and read from them instead.
        Ok(geocache_client::Client::builder().endpoints([self.addr(id)]).discovery(false).build().await?)
    }

    /// A raw admin client to node `id`, once it accepts connections.
    pub async fn admin(&self, id: u64) -> Result<AdminClient<tonic::transport::Channel>> {
        let uri = format!("http://{}", self.addr(id));
        eventually(&format!("node {id} to accept connections"), Duration::from_secs(20), || {
            let uri = uri.clone();
            async move { AdminClient::connect(uri).await.ok() }
        })
        .await
    }

    /// Node `id`'s own view of itself.
    pub async fn local_status(&self, id: u64) -> Option<pb::StatusResponse> {
        let uri = format!("http://{}", self.addr(id));
        let mut admin = AdminClient::connect(uri).await.ok()?;
        let mut request = tonic::Request::new(pb::StatusRequest { local_only: true });
        request.set_timeout(Duration::from_secs(2));
        admin.status(request).await.ok().map(|r| r.into_inner())
    }

    /// Waits until every running node names the same leader, and that leader is running.
    pub async fn wait_for_leader(&self, within: Duration) -> Result<u64> {
        eventually("a leader every running node agrees on", within, || async {
            let mut leader = None;
            for node in self.nodes.values().filter(|n| n.is_running()) {
                let status = self.local_status(node.id).await?;
                let l = status.leader_id?;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            let leader = leader?;
            self.nodes.get(&leader).filter(|n| n.is_running())?;
            Some(leader)
        })
        .await
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, within: Duration) -> Result<()> {
        eventually(&format!("node {id} to apply index {index}"), within, || async {
            let status = self.local_status(id).await?;
            (status.nodes.first()?.applied >= index).then_some(())
        })
        .await
    }

    /// Runs the `geocache` CLI against node `id` with `args`.
    pub fn cli(&self, id: u64, args: &[&str]) -> Output {
        self.cli_at(&self.addr(id), args)
    }

    /// Runs the `geocache` CLI with `--endpoint endpoint` and `args`.
    pub fn cli_at(&self, endpoint: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("GEOCACHE_ENDPOINT", endpoint)
            .env_remove("RUST_LOG")
            .output()
            .expect("run the geocache CLI")
    }

    /// The log of node `id` (for failure messages).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log_path).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
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
