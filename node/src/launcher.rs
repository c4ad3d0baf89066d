//! The one way to run `geocache serve` processes on this machine, shared by `geocache dev`, the
//! integration tests (`tests/`) and the fault-injection harness (`jepsen/`).
//!
//! Owns: picking loopback ports ([`free_port`], [`PortReservation`]), region labels
//! ([`region_for`]), where a node keeps its data and log ([`NodeSpec::in_dir`]), its peer
//! listener ([`NodeSpec::with_peer`]; the admin calls made here go to the client address), its optional
//! Redis-protocol port ([`NodeSpec::with_resp`]) and metrics port ([`NodeSpec::with_metrics`]), the `serve`
//! argument list ([`NodeSpec::serve_args`]), spawning and killing processes ([`NodeProcess`]),
//! initialising a cluster ([`init`]), and waiting on them: the one poll-with-deadline helper
//! ([`eventually`]), [`wait_until_listening`] and [`wait_for_leader`]. Every admin call made here
//! dials the client port as [`ClientAccess`] says: plaintext, or TLS trusting the cluster CA,
//! with a token when the cluster requires one.
//!
//! What a caller chooses: the binary (the harness runs its own build, `geocache-node-under-test`),
//! more `serve` flags for a node's whole life ([`NodeSpec::extra_args`]: netsim `--route`s, Raft
//! timing, `--fault-injection`, limits) or for one start (the `more_args` of
//! [`NodeProcess::spawn`], e.g. `--clock-offset-ms`), environment for every start
//! ([`NodeSpec::env`]) or one start (`more_env`, e.g. `FAILPOINTS`), and where stderr goes
//! ([`NodeSpec::log_path`], appended across restarts). Restarting a node is spawning its
//! [`NodeSpec`] again: same port, data dir and flags.
//!
//! Invariants:
//! * Every process started here is killed (SIGKILL) and reaped when its [`NodeProcess`] drops.
//!   Each also runs with `--exit-with-stdin` and a stdin pipe its parent holds, so it dies with
//!   the parent even if the parent is killed without running destructors.
//! * Nodes listen on the address of their [`NodeSpec`]; every address picked here is on
//!   127.0.0.1.
//! * Nothing here sleeps to synchronise: every wait polls with a deadline and fails naming what
//!   it waited for ([`LaunchError::TimedOut`]).

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::types::NodeId;

/// The region labels nodes get, in turn by id, unless a caller gives its own.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// How often [`eventually`] probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long one admin call made here (connect, status) may take: a paused or partitioned node
/// never answers, so every call needs a deadline.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// What starting or waiting on nodes can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No loopback port could be bound.
    #[error("cannot reserve a loopback port: {0}")]
    Port(#[source] std::io::Error),
    /// A node's log file could not be opened.
    #[error("cannot open the node log {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be started.
    #[error("cannot start node {id} ({}): {source}", bin.display())]
    Spawn {
        /// The node.
        id: NodeId,
        /// The binary.
        bin: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A node could not be reached.
    #[error("cannot reach node {id}: {source}")]
    Connect {
        /// The node.
        id: NodeId,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// `Init` was refused for a reason other than the cluster being initialised already.
    #[error("init through node {id} failed: {}", status.message())]
    Init {
        /// The node asked.
        id: NodeId,
        /// Its answer.
        status: tonic::Status,
    },
    /// A wait ran out of time.
    #[error("timed out after {within:?} waiting for {what}")]
    TimedOut {
        /// What was awaited.
        what: String,
        /// How long.
        within: Duration,
    },
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Some`, or fails after `within` with
/// [`LaunchError::TimedOut`] naming `what`. The probe runs at least once. To fail early, make
/// `T` a `Result` and return `Some(Err(..))`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T, LaunchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(LaunchError::TimedOut { what: what.to_string(), within });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// A free loopback port: bind port 0, read the port, release it. Another process could take it
/// before the node binds it; use a [`PortReservation`] where something else (a proxy) binds
/// ports meanwhile.
pub fn free_port() -> Result<u16, LaunchError> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(LaunchError::Port)
}

/// `n` distinct loopback addresses, held (bound) until [`PortReservation::release`] or drop, so
/// nothing started meanwhile in this process (e.g. a netsim proxy binding its own ports) can
/// take them.
#[derive(Debug)]
pub struct PortReservation {
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
}

impl PortReservation {
    /// Binds `n` ports on 127.0.0.1.
    pub fn new(n: usize) -> Result<PortReservation, LaunchError> {
        let mut listeners = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(LaunchError::Port)?;
            addrs.push(listener.local_addr().map_err(LaunchError::Port)?);
            listeners.push(listener);
        }
        Ok(PortReservation { listeners, addrs })
    }

    /// The reserved addresses, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Releases the ports (just before the nodes that will listen on them start).
    pub fn release(self) -> Vec<SocketAddr> {
        drop(self.listeners);
        self.addrs
    }
}

/// The region of node `id` (ids from 1): `regions` in turn. `regions` must not be empty.
pub fn region_for<S: AsRef<str>>(id: NodeId, regions: &[S]) -> String {
    assert!(!regions.is_empty(), "at least one region");
    regions[(id.saturating_sub(1) as usize) % regions.len()].as_ref().to_string()
}

/// How the launcher reaches a node's client port: plaintext by default; TLS trusting the cluster
/// CA for a node started with `--tls-*`; an (admin) token for one started with `--tokens`.
#[derive(Clone, Default)]
pub struct ClientAccess {
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for ClientAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAccess").field("tls", &self.tls.is_some()).field("token", &self.token.is_some()).finish()
    }
}

impl ClientAccess {
    /// Dial with TLS, trusting only the CA certificate(s) in `ca_pem`.
    pub fn with_ca(mut self, ca_pem: &[u8]) -> Self {
        self.tls = Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)));
        self
    }

    /// Send `token` as a bearer token with every call. Panics unless it is printable ASCII
    /// (the launcher's callers make their own tokens).
    pub fn with_token(mut self, token: &str) -> Self {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().expect("a token is printable ASCII");
        value.set_sensitive(true);
        self.token = Some(value);
        self
    }
}

impl Interceptor for ClientAccess {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// An admin channel as [`ClientAccess`] dials it.
pub type AdminChannel = InterceptedService<Channel, ClientAccess>;

/// How one node is started: fixed for its life (restarts included).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeSpec {
    /// Node id.
    pub id: NodeId,
    /// Where it listens for clients, and the client address it is known by.
    pub addr: SocketAddr,
    /// Where it listens for other members (`--peer-listen`), and the peer address it is known by.
    pub peer_addr: SocketAddr,
    /// Its region label.
    pub region: String,
    /// Where it serves the Redis protocol (`--resp-listen`), if anywhere.
    pub resp_addr: Option<SocketAddr>,
    /// Where it serves Prometheus metrics (`--metrics-listen`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The file its stderr is appended to; `None`: discarded.
    pub log_path: Option<PathBuf>,
    /// More `serve` flags, after the ones every node gets (see [`NodeSpec::serve_args`]).
    pub extra_args: Vec<String>,
    /// Environment for every start (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// How [`init`] and the other admin calls reach its client port.
    #[serde(skip)]
    pub access: ClientAccess,
}

impl NodeSpec {
    /// Node `id` at `addr` in `region`, keeping its data in `data_dir`; no log, no extras. Its
    /// peer address follows the default rule ([`crate::config::default_peer_addr`]: port + 100);
    /// callers that pick ports at random must give one of their own ([`NodeSpec::with_peer`]),
    /// since port + 100 may be another node's.
    pub fn new(id: NodeId, addr: SocketAddr, region: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        NodeSpec {
            id,
            addr,
            peer_addr: crate::config::default_peer_addr(addr).unwrap_or(SocketAddr::new(addr.ip(), 0)),
            region: region.into(),
            resp_addr: None,
            metrics_addr: None,
            data_dir: data_dir.into(),
            log_path: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            access: ClientAccess::default(),
        }
    }

    /// Node `id` at `addr` under `root`: data in `root/node-ID/`, log in `root/node-ID.log`,
    /// region [`region_for`] `id` among `regions`.
    pub fn in_dir<S: AsRef<str>>(root: &Path, id: NodeId, addr: SocketAddr, regions: &[S]) -> Self {
        let mut spec = NodeSpec::new(id, addr, region_for(id, regions), root.join(format!("node-{id}")));
        spec.log_path = Some(root.join(format!("node-{id}.log")));
        spec
    }

    /// Listens for other members on `addr` (`--peer-listen`).
    pub fn with_peer(mut self, addr: SocketAddr) -> Self {
        self.peer_addr = addr;
        self
    }

    /// Serves the Redis protocol on `addr` too.
    pub fn with_resp(mut self, addr: SocketAddr) -> Self {
        self.resp_addr = Some(addr);
        self
    }

    /// Serves Prometheus metrics at `http://addr/metrics` too.
    pub fn with_metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Adds `serve` flags.
    pub fn with_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable for every start.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How admin calls made here reach its client port (TLS trust, token).
    pub fn with_access(mut self, access: ClientAccess) -> Self {
        self.access = access;
        self
    }

    /// Its membership entry.
    pub fn member(&self) -> pb::Member {
        pb::Member {
            id: self.id,
            addr: self.addr.to_string(),
            region: self.region.clone(),
            peer_addr: self.peer_addr.to_string(),
        }
    }

    /// The whole argument list: `serve --id ID --region R --listen ADDR --peer-listen ADDR
    /// --data-dir DIR`,
    /// `--resp-listen ADDR` and `--metrics-listen ADDR` if it has them, the extra args, `more`
    /// (one start's), then `--exit-with-stdin`.
    pub fn serve_args(&self, more: &[String]) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--id".into(),
            self.id.to_string(),
            "--region".into(),
            self.region.clone(),
            "--listen".into(),
            self.addr.to_string(),
            "--peer-listen".into(),
            self.peer_addr.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if let Some(resp) = self.resp_addr {
            args.extend(["--resp-listen".to_string(), resp.to_string()]);
        }
        if let Some(metrics) = self.metrics_addr {
            args.extend(["--metrics-listen".to_string(), metrics.to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(more.iter().cloned());
        args.push("--exit-with-stdin".into());
        args
    }
}

/// A running `geocache serve` process; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    id: NodeId,
    child: Child,
}

impl NodeProcess {
    /// Starts `bin` as the node `spec` describes, with `more_args` and `more_env` for this start
    /// only (`more_env` after [`NodeSpec::env`], so it wins). Stdout is discarded; stderr is
    /// appended to the log, if any.
    pub fn spawn(
        bin: &Path,
        spec: &NodeSpec,
        more_args: &[String],
        more_env: &[(String, String)],
    ) -> Result<NodeProcess, LaunchError> {
        let stderr = match &spec.log_path {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LaunchError::Log { path: path.clone(), source })?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(bin)
            .args(spec.serve_args(more_args))
            // Held by this process: when it goes, the node goes (`--exit-with-stdin`).
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .envs(spec.env.iter().chain(more_env).map(|(k, v)| (k, v)))
            .spawn()
            .map_err(|source| LaunchError::Spawn { id: spec.id, bin: bin.to_path_buf(), source })?;
        Ok(NodeProcess { id: spec.id, child })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The OS process id (for signals such as SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// `kill -9` and reap it. Works on a stopped (SIGSTOP) process too.
    pub fn kill(mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin client to `addr` (`host:port`) dialled as `access` says, connected within
/// [`ADMIN_CALL_TIMEOUT`], whose every call is bounded by the same.
pub async fn admin(addr: &str, access: &ClientAccess) -> Result<AdminClient<AdminChannel>, tonic::transport::Error> {
    admin_with_call_timeout(addr, access, ADMIN_CALL_TIMEOUT).await
}

/// [`admin`] whose calls may take up to `call_timeout` (a channel's timeout caps every
/// request's own: a longer call needs a channel of its own).
pub async fn admin_with_call_timeout(
    addr: &str,
    access: &ClientAccess,
    call_timeout: Duration,
) -> Result<AdminClient<AdminChannel>, tonic::transport::Error> {
    let scheme = if access.tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(tls) = &access.tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    let channel = endpoint.connect_timeout(ADMIN_CALL_TIMEOUT).timeout(call_timeout).connect().await?;
    Ok(AdminClient::with_interceptor(channel, access.clone()))
}

/// The node at `addr`'s view of itself (admin `Status`, local only), or `None` if it does not
/// answer within [`ADMIN_CALL_TIMEOUT`] (down, paused, cut off).
pub async fn local_status(addr: &str, access: &ClientAccess) -> Option<pb::StatusResponse> {
    own_status(addr, access, true).await
}

/// [`local_status`] without the cache's state hash (which walks the whole cache): the node's
/// role, term, leader and indexes, cheap enough to ask for several times a second.
pub async fn local_role(addr: &str, access: &ClientAccess) -> Option<pb::StatusResponse> {
    own_status(addr, access, false).await
}

async fn own_status(addr: &str, access: &ClientAccess, with_state_hash: bool) -> Option<pb::StatusResponse> {
    let mut admin = admin(addr, access).await.ok()?;
    let mut request = tonic::Request::new(pb::StatusRequest { local_only: true, with_state_hash });
    request.set_timeout(ADMIN_CALL_TIMEOUT);
    admin.status(request).await.ok().map(|r| r.into_inner())
}

/// Waits until the node at `addr` accepts gRPC connections (as `access` dials them).
pub async fn wait_until_listening(
    id: NodeId,
    addr: &str,
    access: &ClientAccess,
    within: Duration,
) -> Result<(), LaunchError> {
    eventually(&format!("node {id} at {addr} to accept connections"), within, || async {
        admin(addr, access).await.ok().map(|_| ())
    })
    .await
}

/// What [`init`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initialised {
    /// This call initialised the cluster.
    Now,
    /// The node was initialised already (e.g. restarted on its data dir); nothing changed.
    Before,
}

/// Initialises a cluster of `members` (all voters) through `first` (which must be among them),
/// waiting up to `within` for it to accept connections first.
pub async fn init(first: &NodeSpec, members: Vec<pb::Member>, within: Duration) -> Result<Initialised, LaunchError> {
    let addr = first.addr.to_string();
    wait_until_listening(first.id, &addr, &first.access, within).await?;
    // Init makes the cluster id and the first vote and log entry durable: on a loaded machine
    // that takes longer than a status call may, so it gets all of `within`.
    let call_timeout = within.max(ADMIN_CALL_TIMEOUT);
    let mut admin = admin_with_call_timeout(&addr, &first.access, call_timeout)
        .await
        .map_err(|source| LaunchError::Connect { id: first.id, source })?;
    let mut request = tonic::Request::new(pb::InitRequest { members });
    request.set_timeout(call_timeout);
    match admin.init(request).await {
        Ok(_) => Ok(Initialised::Now),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(Initialised::Before),
        Err(status) => Err(LaunchError::Init { id: first.id, status }),
    }
}

/// The leader every node of `nodes` (`(id, addr)`) names in its local status, if they all
/// answer, all name the same one, and it is one of `nodes`.
pub async fn agreed_leader(nodes: &[(NodeId, String)], access: &ClientAccess) -> Option<NodeId> {
    let mut leader = None;
    for (_, addr) in nodes {
        let named = local_role(addr, access).await?.leader_id?;
        if leader.is_some_and(|l| l != named) {
            return None;
        }
        leader = Some(named);
    }
    let leader = leader?;
    nodes.iter().any(|(id, _)| *id == leader).then_some(leader)
}

/// Waits until the nodes `running()` lists (asked again at every probe, as processes come and
/// go) agree on a leader that is one of them; see [`agreed_leader`].
pub async fn wait_for_leader<F>(mut running: F, access: &ClientAccess, within: Duration) -> Result<NodeId, LaunchError>
where
    F: FnMut() -> Vec<(NodeId, String)>,
{
    eventually("a leader every running node agrees on", within, || {
        let nodes = running();
        async move { agreed_leader(&nodes, access).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_args_put_the_fixed_flags_first_and_exit_with_stdin_last() {
        let root = Path::new("/tmp/x");
        let spec =
            NodeSpec::in_dir(root, 2, "127.0.0.1:7002".parse().unwrap(), &REGIONS).with_args(["--max-entries", "3"]);
        assert_eq!(spec.region, "eu-west");
        assert_eq!(spec.log_path.as_deref(), Some(Path::new("/tmp/x/node-2.log")));
        assert_eq!(
            spec.serve_args(&["--clock-offset-ms=5".into()]).join(" "),
            "serve --id 2 --region eu-west --listen 127.0.0.1:7002 --peer-listen 127.0.0.1:7102 --data-dir /tmp/x/node-2 \
             --max-entries 3 --clock-offset-ms=5 --exit-with-stdin"
        );
        let with_resp = spec.clone().with_resp("127.0.0.1:6380".parse().unwrap());
        assert!(with_resp
            .serve_args(&[])
            .join(" ")
            .contains("--data-dir /tmp/x/node-2 --resp-listen 127.0.0.1:6380 --max"));
        let with_both = with_resp.with_metrics("127.0.0.1:9102".parse().unwrap());
        assert!(with_both
            .serve_args(&[])
            .join(" ")
            .contains("--resp-listen 127.0.0.1:6380 --metrics-listen 127.0.0.1:9102 --max"));
        assert_eq!(region_for(4, &REGIONS), "us-east");
        assert_eq!(region_for(1, &["solo"]), "solo");
    }

    #[test]
    fn reserved_ports_are_distinct_and_held() {
        let ports = PortReservation::new(3).unwrap();
        let addrs = ports.addrs().to_vec();
        assert_eq!(addrs.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
        assert!(TcpListener::bind(addrs[0]).is_err(), "held while reserved");
        // (Whether the port is free afterwards is not asserted: any process may take it then.)
        assert_eq!(ports.release(), addrs);
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_polls_until_some_or_names_what_it_waited_for() {
        let mut calls = 0;
        let got = eventually("three calls", Duration::from_secs(1), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
        let err = eventually("nothing", Duration::from_millis(200), || async { None::<()> }).await.unwrap_err();
        assert!(
            matches!(err, LaunchError::TimedOut { ref what, within } if what == "nothing" && within == Duration::from_millis(200))
        );
    }

    #[test]
    fn a_dropped_process_is_killed_and_reaped() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // A stand-in binary that ignores its arguments and stays up.
        let bin = dir.path().join("fake-geocache");
        std::fs::write(&bin, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = NodeSpec::new(1, "127.0.0.1:1".parse().unwrap(), "r", dir.path().join("node-1"));
        let mut process = NodeProcess::spawn(&bin, &spec, &[], &[]).unwrap();
        assert!(process.try_wait().unwrap().is_none());
        let pid = process.pid();
        drop(process);
        // Killed and reaped: no process (not even a zombie) has that pid any more.
        let alive = Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().unwrap();
        assert!(!alive.success(), "process {pid} survived its NodeProcess");
    }
}
