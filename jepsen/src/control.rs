//! Cluster control: real `geocache serve` processes on loopback, each behind the fault proxy.
//!
//! A [`Cluster`] owns N node processes (ids 1..=N, regions assigned in turn), one
//! [`Netsim`] mesh that every node-to-node link crosses (each node is started with `--route`
//! flags for its outgoing links; the proxy forwards to the nodes' peer listeners, where every
//! member-to-member call goes), and each node's data dir and log under the run's output dir:
//!
//! ```text
//! DIR/nodes/node-N/       data dir (sled: Raft log, vote, snapshots)
//! DIR/nodes/node-N.log    the node's stderr, appended across restarts, with a harness line
//!                         before each start
//! ```
//!
//! With [`ClusterSpec::resp`] every node also serves the Redis protocol on a port of its own
//! (`--resp-listen`, loopback, distinct from every other port of the cluster; see
//! [`Cluster::resp_endpoints`]), for the workload's RESP clients.
//!
//! What the harness may do to a node: `kill -9` it ([`Cluster::kill`]), restart it on the same
//! port, data dir and flags ([`Cluster::restart`]), pause it with SIGSTOP and resume it with
//! SIGCONT ([`Cluster::pause`], [`Cluster::resume`]); and to links, whatever [`Cluster::net`]
//! offers (partitions, delays). Clients dial nodes directly, never through the proxy.
//!
//! Invariants:
//! * Every process this module spawns is killed and reaped when the [`Cluster`] drops (even a
//!   paused one: SIGKILL ends a stopped process). Each node also runs with `--exit-with-stdin`
//!   and a stdin pipe this process holds, so nodes die with the harness even if it is killed.
//! * A node's port, data dir and flags never change across restarts.
//! * A node that exits without the harness killing it is recorded ([`Cluster::unexpected_exits`]):
//!   that is a finding about the node, not a harness error. The exception is a node the harness
//!   *armed* ([`Cluster::restart_with_env`] with `FAILPOINTS`) that then dies at one of the armed
//!   fault points (its log shows the fault point's panic): that death was asked for, and is
//!   recorded apart ([`Cluster::fault_point_exits`]).
//! * Environment: every node gets [`ClusterSpec::env`], then its own [`ClusterSpec::node_env`]
//!   (both on every start, restarts included), then, for one start only, what
//!   [`Cluster::restart_with_env`] adds. `FAILPOINTS` values are joined with `;`, other
//!   variables are overridden by the later source.
//!
//! Membership: every node starts as a voter; [`Cluster::remove_voter`] and
//! [`Cluster::remove_member`] shrink the voter set through the leader, and
//! [`Cluster::restore_membership`] makes every node a voter again (adding removed ones back as
//! learners first). Clock: the harness's node binary accepts fault injection, so
//! [`Cluster::set_clock_offset`] can shift one node's wall clock while it runs; the offset is
//! remembered and given again (`GEOCACHE_CLOCK_OFFSET_MS`) when the node restarts.
//!
//! [`Cluster::heal_all`] undoes all of it: links, pauses, kills, clock offsets, membership.
//!
//! Ports, data dirs, the `serve` flags, spawning and killing processes, init and the waits
//! (`eventually`, `wait_for_leader`) are `geocache_node::launcher`'s, as for `geocache dev` and
//! the integration tests; this module adds the harness's part: the proxy routes, the per-start
//! environment and clock offset, the log header, and the process states.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use geocache_node::launcher::{self, AdminChannel, ClientAccess, NodeProcess, PortReservation, ADMIN_CALL_TIMEOUT};
use geocache_node::netsim::{LatencyMatrix, Netsim};
use geocache_node::types::NodeId;
use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;
use serde::Serialize;

pub use geocache_node::launcher::NodeSpec;
pub use geocache_node::netsim::raft_timing;

/// The regions nodes are labelled with, in turn, unless told otherwise.
pub const DEFAULT_REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// How long a (re)started node may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one membership call may take (adding a learner waits until it caught up).
const MEMBERSHIP_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Cluster::heal_all`] may retry to make every node a voter again.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Who votes and who only replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `geocache` binary.
    pub bin: PathBuf,
    /// The run's output dir; nodes live under `DIR/nodes/`.
    pub dir: PathBuf,
    /// Number of voters (ids 1..=nodes).
    pub nodes: u64,
    /// Region labels, assigned to nodes in turn by id.
    pub regions: Vec<String>,
    /// One-way delays between regions on every node-to-node link; `None`: no delay.
    pub latency: Option<LatencyMatrix>,
    /// Raft heartbeat; `None`: fitted to the latency (see [`raft_timing`]).
    pub heartbeat: Option<Duration>,
    /// Raft election timeout; `None`: fitted to the latency.
    pub election_timeout: Option<Duration>,
    /// `RUST_LOG` of the nodes.
    pub node_log_filter: String,
    /// More `geocache serve` flags for every node.
    pub extra_args: Vec<String>,
    /// Environment of every node, on every start (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// Environment of one node, on every start, after [`ClusterSpec::env`].
    pub node_env: BTreeMap<NodeId, Vec<(String, String)>>,
    /// Give every node a Redis-protocol port too (`--resp-listen 127.0.0.1:PORT`).
    pub resp: bool,
    /// Run every node with TLS: a throwaway CA and a certificate per node in `DIR/tls/`,
    /// `--tls-*` on every node, and the harness's own calls over TLS trusting that CA.
    pub tls: bool,
}

/// What the harness has done to a node's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Killed by the harness (SIGKILL), not restarted yet.
    Killed,
    /// Exited on its own; see [`Cluster::unexpected_exits`].
    Exited,
}

/// A node process that exited without the harness killing it.
#[derive(Clone, Debug, Serialize)]
pub struct UnexpectedExit {
    pub node: NodeId,
    /// Seconds since the cluster was started.
    pub at_s: f64,
    /// The exit status, as the OS reports it (`exit status: 2`, `signal: 6 (SIGABRT)`).
    pub status: String,
    /// The last lines of its log.
    pub log_tail: String,
}

/// A node that the harness armed with fault points and that died at one of them.
#[derive(Clone, Debug, Serialize)]
pub struct FaultPointExit {
    pub node: NodeId,
    /// Seconds since the cluster was started.
    pub at_s: f64,
    /// The `FAILPOINTS` it was armed with for that start.
    pub failpoints: String,
    /// The fault point whose panic its log shows.
    pub point: String,
    pub status: String,
}

struct NodeProc {
    spec: NodeSpec,
    state: ProcessState,
    child: Option<NodeProcess>,
    starts: u32,
    /// The `FAILPOINTS` this start was armed with by [`Cluster::restart_with_env`], if any.
    armed: Option<String>,
    /// This start ended at one of the armed fault points.
    died_at_point: bool,
    /// The wall-clock offset the harness wants this node to run with (ms).
    clock_offset_ms: i64,
}

impl NodeProc {
    /// Its log (every harness node has one: [`NodeSpec::in_dir`]).
    fn log_path(&self) -> &Path {
        self.spec.log_path.as_deref().expect("harness nodes log to a file")
    }
}

/// A running cluster. Every method takes `&self` (the process table sits behind a mutex), so
/// the nemesis, the workload and the runner can share it in an `Arc`.
pub struct Cluster {
    net: Netsim,
    spec: ClusterSpec,
    // A std mutex: held only to spawn or signal a process, never across an await.
    nodes: Mutex<BTreeMap<NodeId, NodeProc>>,
    exits: Mutex<Vec<UnexpectedExit>>,
    fault_point_exits: Mutex<Vec<FaultPointExit>>,
    started: Instant,
    /// The nodes' Raft election timeout, as given to them.
    election_timeout: Duration,
    /// How the harness dials the client ports ([`ClusterSpec::tls`]).
    access: ClientAccess,
    /// The cluster CA's certificate (PEM) when the nodes run with TLS.
    ca_pem: Option<Arc<[u8]>>,
}

impl Cluster {
    /// Starts every node behind a fresh proxy mesh, initialises them as one cluster with all
    /// as voters, and waits until they agree on a leader. Must run inside a Tokio runtime
    /// (the proxy's links are tasks). Every failure here is a harness error: the binary is
    /// missing, a node would not start, or no leader was elected within `within`.
    pub async fn start(spec: ClusterSpec, within: Duration) -> Result<Cluster> {
        let cluster = Cluster::spawn_all(spec)?;
        cluster.init(within).await?;
        Ok(cluster)
    }

    /// Starts the processes (without initialising the cluster).
    fn spawn_all(spec: ClusterSpec) -> Result<Cluster> {
        if spec.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        if spec.regions.is_empty() {
            bail!("a cluster needs at least one region");
        }
        check_binary(&spec.bin)?;
        let nodes_dir = spec.dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir).with_context(|| format!("create {}", nodes_dir.display()))?;

        // Hold every node's port until the proxy has bound its own ports, so neither can take
        // the other's; release them just before the nodes start.
        // Ports: the client listeners, the peer listeners the proxy sits in front of (every
        // member-to-member call goes to peer addresses, so all of it crosses the proxy; clients
        // dial nodes directly), and with RESP the RESP ports, node by node.
        let n = spec.nodes as usize;
        let reserved = PortReservation::new(if spec.resp { 3 * n } else { 2 * n })?;
        let ports = reserved.addrs();
        let addrs: Vec<(NodeId, SocketAddr)> = (1..=spec.nodes).zip(ports[..n].iter().copied()).collect();
        let peer_addrs: Vec<(NodeId, SocketAddr)> = (1..=spec.nodes).zip(ports[n..2 * n].iter().copied()).collect();
        let resp_addrs: Vec<SocketAddr> = ports[2 * n..].to_vec();
        let net = Netsim::new();
        net.add_mesh(&peer_addrs).context("start the fault proxy")?;

        let regions: BTreeMap<NodeId, String> =
            addrs.iter().map(|(id, _)| (*id, launcher::region_for(*id, &spec.regions))).collect();
        let mut max_delay = Duration::ZERO;
        if let Some(matrix) = &spec.latency {
            let used: Vec<&str> = spec.regions.iter().map(String::as_str).collect();
            matrix.validate(&used).context("--latency")?;
            net.apply_latency(matrix, &regions);
            max_delay = matrix.max_delay(&used);
        }
        let (heartbeat, election) = raft_timing(max_delay);
        let heartbeat = spec.heartbeat.unwrap_or(heartbeat);
        let election = spec.election_timeout.unwrap_or(election);

        let tls = if spec.tls { Some(make_certificates(&spec.dir.join("tls"), spec.nodes)?) } else { None };
        let access = match &tls {
            Some((ca_pem, _)) => ClientAccess::default().with_ca(ca_pem),
            None => ClientAccess::default(),
        };
        let mut table = BTreeMap::new();
        for (i, ((id, addr), (_, peer))) in addrs.iter().zip(&peer_addrs).enumerate() {
            let mut node =
                NodeSpec::in_dir(&nodes_dir, *id, *addr, &spec.regions).with_peer(*peer).with_access(access.clone());
            if let Some((_, flags)) = &tls {
                node = node.with_args(flags[i].iter().cloned());
            }
            if let Some(resp) = resp_addrs.get(i) {
                node = node.with_resp(*resp);
            }
            let node = node
                .with_args([
                    "--heartbeat".to_string(),
                    format!("{}ms", heartbeat.as_millis()),
                    "--election-timeout".into(),
                    format!("{}ms", election.as_millis()),
                ])
                .with_args(net.route_args(*id))
                .with_args(spec.extra_args.iter().cloned())
                .with_env("RUST_LOG", spec.node_log_filter.clone())
                // Plain text logs: they go to a file, not a terminal.
                .with_env("NO_COLOR", "1");
            table.insert(
                *id,
                NodeProc {
                    spec: node,
                    state: ProcessState::Killed,
                    child: None,
                    starts: 0,
                    armed: None,
                    died_at_point: false,
                    clock_offset_ms: 0,
                },
            );
        }
        reserved.release();
        let cluster = Cluster {
            net,
            spec,
            nodes: Mutex::new(table),
            exits: Mutex::default(),
            fault_point_exits: Mutex::default(),
            started: Instant::now(),
            election_timeout: election,
            access,
            ca_pem: tls.map(|(ca_pem, _)| Arc::from(ca_pem)),
        };
        for id in cluster.ids() {
            cluster.spawn(id, &[])?;
        }
        Ok(cluster)
    }

    /// Initialises the cluster through node 1 with every node a voter, then waits for a leader
    /// every node agrees on.
    async fn init(&self, within: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + within;
        let specs = self.specs();
        for id in self.ids() {
            self.wait_until_listening(id, deadline.saturating_duration_since(Instant::now())).await?;
        }
        let members: Vec<pb::Member> = specs.iter().map(NodeSpec::member).collect();
        let first = specs.first().ok_or_else(|| anyhow!("no nodes"))?;
        launcher::init(first, members, Duration::from_secs(5)).await.context("init")?;
        self.wait_for_leader(deadline.saturating_duration_since(Instant::now())).await.context("after init")
    }

    /// The nodes' Raft election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
    }

    /// The proxy every node-to-node link crosses: partitions and delays go through it.
    pub fn net(&self) -> &Netsim {
        &self.net
    }

    /// Node ids, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.lock().keys().copied().collect()
    }

    /// How every node is started, by id.
    pub fn specs(&self) -> Vec<NodeSpec> {
        self.lock().values().map(|n| n.spec.clone()).collect()
    }

    /// Node `id`'s client address.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.lock().get(&id).map(|n| n.spec.addr)
    }

    /// Every node's client address, by id.
    pub fn endpoints(&self) -> Vec<(NodeId, String)> {
        self.lock().values().map(|n| (n.spec.id, n.spec.addr.to_string())).collect()
    }

    /// Every node's Redis-protocol address, by id (empty unless [`ClusterSpec::resp`]).
    pub fn resp_endpoints(&self) -> Vec<(NodeId, String)> {
        self.lock().values().filter_map(|n| Some((n.spec.id, n.spec.resp_addr?.to_string()))).collect()
    }

    /// What the harness has done to node `id`.
    pub fn state(&self, id: NodeId) -> Option<ProcessState> {
        self.lock().get(&id).map(|n| n.state)
    }

    /// The output dir's `nodes/` dir.
    pub fn nodes_dir(&self) -> PathBuf {
        self.spec.dir.join("nodes")
    }

    /// `kill -9` node `id` and reap it. Killing a paused node works too (SIGKILL ends a stopped
    /// process).
    pub fn kill(&self, id: NodeId) -> Result<()> {
        let mut nodes = self.lock();
        let node = nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let child = node.child.take().ok_or_else(|| anyhow!("node {id} is not running ({:?})", node.state))?;
        child.kill().with_context(|| format!("kill -9 node {id} and reap it"))?; // SIGKILL on unix
        node.state = ProcessState::Killed;
        Ok(())
    }

    /// Restarts a killed (or exited) node on its port, data dir and flags, and waits until it
    /// accepts connections. It rejoins with the membership on its disk.
    pub async fn restart(&self, id: NodeId) -> Result<()> {
        self.spawn(id, &[])?;
        self.wait_until_listening(id, START_TIMEOUT).await
    }

    /// Restarts a killed (or exited) node like [`Cluster::restart`], with `env` added to its
    /// environment for this start only. With `FAILPOINTS` in `env` the node is *armed*: if it
    /// then dies at one of those fault points, that is recorded in
    /// [`Cluster::fault_point_exits`], not as an unexpected exit, and dying at it while still
    /// starting is not an error either.
    pub async fn restart_with_env(&self, id: NodeId, env: &[(&str, &str)]) -> Result<()> {
        self.spawn(id, env)?;
        match self.wait_until_listening(id, START_TIMEOUT).await {
            Err(_) if self.died_at_fault_point(id) => Ok(()),
            other => other,
        }
    }

    /// Whether node `id` has died at a fault point it was armed with, and not been restarted
    /// since. Polls for exits first.
    pub fn died_at_fault_point(&self, id: NodeId) -> bool {
        self.poll_exits();
        self.lock().get(&id).is_some_and(|n| n.state == ProcessState::Exited && n.died_at_point)
    }

    /// Every death at an armed fault point so far.
    pub fn fault_point_exits(&self) -> Vec<FaultPointExit> {
        self.poll_exits();
        self.fault_point_exits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops node `id` with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&self, id: NodeId) -> Result<()> {
        self.signal(id, "STOP", ProcessState::Running, ProcessState::Paused)
    }

    /// Resumes a paused node with SIGCONT.
    pub fn resume(&self, id: NodeId) -> Result<()> {
        self.signal(id, "CONT", ProcessState::Paused, ProcessState::Running)
    }

    /// Undoes every fault: heals every link, resumes every paused node and restarts every
    /// killed one (a node that exited on its own is restarted too, so the run can go on; its
    /// exit stays recorded), sets every clock offset back to 0 and makes every node a voter
    /// again. Errors only if a node cannot be brought back.
    pub async fn heal_all(&self) -> Result<()> {
        self.net.heal();
        self.poll_exits();
        let mut to_restart = Vec::new();
        for id in self.ids() {
            match self.state(id) {
                Some(ProcessState::Paused) => self.resume(id)?,
                Some(ProcessState::Killed | ProcessState::Exited) => to_restart.push(id),
                _ => {}
            }
        }
        for id in to_restart {
            self.restart(id).await?;
        }
        for id in self.ids() {
            if self.clock_offset(id) != 0 {
                self.set_clock_offset(id, 0).await?;
            }
        }
        self.restore_membership(MEMBERSHIP_TIMEOUT).await
    }

    /// The clock offset node `id` runs with (ms).
    pub fn clock_offset(&self, id: NodeId) -> i64 {
        self.lock().get(&id).map_or(0, |n| n.clock_offset_ms)
    }

    /// Shifts node `id`'s wall clock by `offset_ms` from the host's: at once if it is running
    /// (admin `SetClockOffset`), and on every later start (`GEOCACHE_CLOCK_OFFSET_MS`). A node that is
    /// not running now (paused, killed) gets the offset at its next start.
    pub async fn set_clock_offset(&self, id: NodeId, offset_ms: i64) -> Result<()> {
        let running = {
            let mut nodes = self.lock();
            let node = nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
            node.clock_offset_ms = offset_ms;
            node.state == ProcessState::Running
        };
        if running {
            let mut admin = self.admin(id).await.with_context(|| format!("reach node {id} to skew its clock"))?;
            let mut request = tonic::Request::new(pb::SetClockOffsetRequest { offset_ms });
            request.set_timeout(ADMIN_CALL_TIMEOUT);
            admin
                .set_clock_offset(request)
                .await
                .map_err(|s| anyhow!("set node {id}'s clock offset to {offset_ms}ms: {}", s.message()))?;
        }
        Ok(())
    }

    /// The current voters and learners, as the leader's membership says, or an error if no
    /// leader answers within `within`.
    pub async fn membership(&self, within: Duration) -> Result<Membership> {
        let response = self
            .with_leader(within, "read the membership", |mut admin| async move {
                let mut request = tonic::Request::new(pb::StatusRequest { local_only: true, with_state_hash: false });
                request.set_timeout(ADMIN_CALL_TIMEOUT);
                admin.status(request).await.map(|r| r.into_inner())
            })
            .await?;
        let mut membership = Membership::default();
        // A leader that was just removed still answers for a moment; it lists itself as
        // "removed", which is not a member.
        for node in response.nodes.into_iter().filter(|n| n.role != "removed") {
            if node.voter {
                membership.voters.insert(node.id);
            } else {
                membership.learners.insert(node.id);
            }
        }
        Ok(membership)
    }

    /// Demotes voter `id` to a learner (it keeps replicating but no longer votes or counts for
    /// a quorum). Through the leader, retried until `within`.
    pub async fn remove_voter(&self, id: NodeId, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let membership = self.membership(within).await?;
        let voters: Vec<NodeId> = membership.voters.iter().copied().filter(|v| *v != id).collect();
        if voters.len() == membership.voters.len() {
            return Ok(());
        }
        self.change_voters(voters, true, deadline.saturating_duration_since(Instant::now())).await
    }

    /// Removes node `id` from the cluster altogether (voter or learner): it gets no more log
    /// entries until it is added back. Through the leader, retried until `within`.
    pub async fn remove_member(&self, id: NodeId, within: Duration) -> Result<()> {
        self.with_leader(within, &format!("remove node {id}"), |mut admin| async move {
            let mut request = tonic::Request::new(pb::RemoveRequest { id });
            request.set_timeout(MEMBERSHIP_CALL_TIMEOUT);
            admin.remove(request).await.map(|_| ())
        })
        .await
    }

    /// Makes every node a voter again: nodes no longer in the membership are added back as
    /// learners (and waited for until caught up), then the voter set is replaced by all nodes.
    /// Retried through whichever node leads until `within`.
    pub async fn restore_membership(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let all: BTreeSet<NodeId> = self.ids().into_iter().collect();
        let membership = self.membership(within).await?;
        if membership.voters == all {
            return Ok(());
        }
        for id in all.iter().filter(|id| !membership.voters.contains(id) && !membership.learners.contains(id)) {
            let member = self.lock()[id].spec.member();
            self.with_leader(
                deadline.saturating_duration_since(Instant::now()),
                &format!("add node {id} back as a learner"),
                |mut admin| {
                    let member = member.clone();
                    async move {
                        let mut request =
                            tonic::Request::new(pb::AddLearnerRequest { member: Some(member), wait_caught_up: true });
                        request.set_timeout(MEMBERSHIP_CALL_TIMEOUT);
                        match admin.add_learner(request).await {
                            // Added by an earlier attempt whose answer was lost.
                            Err(s) if s.message().contains("already") => Ok(()),
                            other => other.map(|_| ()),
                        }
                    }
                },
            )
            .await?;
        }
        self.change_voters(all.into_iter().collect(), false, deadline.saturating_duration_since(Instant::now())).await
    }

    /// Replaces the voter set with `voters` (removed voters stay learners if `retain`).
    async fn change_voters(&self, voters: Vec<NodeId>, retain: bool, within: Duration) -> Result<()> {
        let what = format!("change the voters to {voters:?}");
        self.with_leader(within, &what, |mut admin| {
            let voters = voters.clone();
            async move {
                let mut request =
                    tonic::Request::new(pb::ChangeMembershipRequest { voters, retain_as_learners: retain });
                request.set_timeout(MEMBERSHIP_CALL_TIMEOUT);
                admin.change_membership(request).await.map(|_| ())
            }
        })
        .await
    }

    /// Runs `call` against the leader's admin service until it succeeds, retrying (with a fresh
    /// look for the leader) on any error until `within` has passed; then fails with the last
    /// error. Membership calls are idempotent as this module makes them, so a retry after a
    /// lost answer is harmless.
    async fn with_leader<T, F, Fut>(&self, within: Duration, what: &str, call: F) -> Result<T>
    where
        F: Fn(AdminClient<AdminChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + within;
        let mut last = String::from("no leader found");
        loop {
            if let Some(leader) = self.leader().await.filter(|l| self.state(*l) == Some(ProcessState::Running)) {
                // A membership call may wait for a learner to catch up: the channel must not cut
                // it shorter than the call's own timeout (an 800 ms status channel did, so under
                // load a learner was never added back).
                let addr = self.addr(leader).map(|a| a.to_string()).unwrap_or_default();
                match launcher::admin_with_call_timeout(&addr, &self.access(), MEMBERSHIP_CALL_TIMEOUT)
                    .await
                    .map_err(anyhow::Error::from)
                {
                    Ok(admin) => match call(admin).await {
                        Ok(value) => return Ok(value),
                        Err(status) => last = format!("node {leader}: {}", status.message()),
                    },
                    Err(e) => last = format!("node {leader}: {e:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!("could not {what} within {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Notes every node that exited without the harness killing it (see
    /// [`Cluster::unexpected_exits`]); returns the ones found now. Cheap; call it often.
    pub fn poll_exits(&self) -> Vec<UnexpectedExit> {
        let mut found = Vec::new();
        let mut at_points = Vec::new();
        let mut nodes = self.lock();
        for node in nodes.values_mut() {
            let Some(child) = node.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                node.state = ProcessState::Exited;
                // This start's part of the log (a panic's backtrace can be long).
                let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
                let this_start = log.rfind("=== geocache-jepsen: ").map_or(&log[..], |at| &log[at..]);
                if let Some(point) = node.armed.as_deref().and_then(|armed| fault_point_panic(armed, this_start)) {
                    node.died_at_point = true;
                    at_points.push(FaultPointExit {
                        node: node.spec.id,
                        at_s: self.started.elapsed().as_secs_f64(),
                        failpoints: node.armed.clone().unwrap_or_default(),
                        point,
                        status: describe_exit(status),
                    });
                    continue;
                }
                found.push(UnexpectedExit {
                    node: node.spec.id,
                    at_s: self.started.elapsed().as_secs_f64(),
                    status: describe_exit(status),
                    log_tail: log_tail(node.log_path(), 20),
                });
            }
        }
        drop(nodes);
        self.exits.lock().unwrap_or_else(|e| e.into_inner()).extend(found.iter().cloned());
        self.fault_point_exits.lock().unwrap_or_else(|e| e.into_inner()).extend(at_points);
        found
    }

    /// Every unexpected exit seen so far.
    pub fn unexpected_exits(&self) -> Vec<UnexpectedExit> {
        self.poll_exits();
        self.exits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Node `id`'s view of itself (admin `Status`, local only), or `None` if it does not answer
    /// within a short deadline (down, paused, or overloaded).
    pub async fn local_status(&self, id: NodeId) -> Option<pb::StatusResponse> {
        launcher::local_status(&self.addr(id)?.to_string(), &self.access()).await
    }

    /// Node `id`'s role, term and leader ([`launcher::local_role`]: no state hash), or `None`
    /// if it does not answer within a short deadline.
    pub async fn local_role(&self, id: NodeId) -> Option<pb::StatusResponse> {
        launcher::local_role(&self.addr(id)?.to_string(), &self.access()).await
    }

    /// The leader as the running nodes see it: the one named in the highest term any of them
    /// reports, or `None` if none answers or none knows a leader.
    pub async fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(u64, NodeId)> = None;
        for id in self.ids() {
            if self.state(id) != Some(ProcessState::Running) {
                continue;
            }
            if let Some(status) = self.local_role(id).await {
                if let Some(leader) = status.leader_id {
                    if best.is_none_or(|(term, _)| status.term > term) {
                        best = Some((status.term, leader));
                    }
                }
            }
        }
        best.map(|(_, leader)| leader)
    }

    /// Waits until every running node answers and names the same leader, and that leader is
    /// running. Errors after `within` (a liveness finding if the cluster was healthy).
    pub async fn wait_for_leader(&self, within: Duration) -> Result<NodeId> {
        let running = || {
            self.lock()
                .values()
                .filter(|n| n.state == ProcessState::Running)
                .map(|n| (n.spec.id, n.spec.addr.to_string()))
                .collect()
        };
        launcher::wait_for_leader(running, &self.access(), within)
            .await
            .with_context(|| format!("the nodes did not agree on a leader; see {}", self.nodes_dir().display()))
    }

    /// Waits until node `id` accepts gRPC connections; fails early, with its log tail, if the
    /// process exits.
    async fn wait_until_listening(&self, id: NodeId, within: Duration) -> Result<()> {
        launcher::eventually(&format!("node {id} to accept connections (see its log)"), within, || async move {
            if self.admin(id).await.is_ok() {
                return Some(Ok(()));
            }
            let exit = self.poll_exits().into_iter().find(|e| e.node == id)?;
            Some(Err(anyhow!("node {id} exited while starting ({}); its log ends:\n{}", exit.status, exit.log_tail)))
        })
        .await?
    }

    /// An admin client to node `id`, with a short connect and call timeout.
    async fn admin(&self, id: NodeId) -> Result<AdminClient<AdminChannel>> {
        let addr = self.addr(id).ok_or_else(|| anyhow!("no node {id}"))?;
        Ok(launcher::admin(&addr.to_string(), &self.access()).await?)
    }

    /// How the harness dials client ports: plaintext, or TLS trusting the run's CA.
    fn access(&self) -> ClientAccess {
        self.access.clone()
    }

    /// The cluster CA's certificate (PEM) when the nodes run with TLS, for the clients.
    pub fn ca_pem(&self) -> Option<Arc<[u8]>> {
        self.ca_pem.clone()
    }

    /// Starts node `id`'s process (which must not be running), with `extra` added to its
    /// environment for this start (armed if it sets `FAILPOINTS`).
    fn spawn(&self, id: NodeId, extra: &[(&str, &str)]) -> Result<()> {
        let mut nodes = self.lock();
        let node = nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .with_context(|| format!("open {}", node.log_path().display()))?;
        let verb = if node.starts == 0 { "starting" } else { "restarting" };
        let mut extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if node.clock_offset_ms != 0 {
            // Read by the harness's node binary (geocache-node-under-test) only.
            extra.push(("GEOCACHE_CLOCK_OFFSET_MS".into(), node.clock_offset_ms.to_string()));
        }
        let env = merge_env(
            [&self.spec.env[..], self.spec.node_env.get(&id).map_or(&[][..], Vec::as_slice), &extra[..]].concat(),
        );
        let armed = extra.iter().find(|(k, _)| k == "FAILPOINTS").map(|(_, v)| v.clone());
        let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        writeln!(
            log,
            "=== geocache-jepsen: {verb} node {id} at {} (cluster t={:.3}s): {}{} {}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            self.started.elapsed().as_secs_f64(),
            env_text.concat(),
            self.spec.bin.display(),
            node.spec.serve_args(&[]).join(" ")
        )?;
        let child =
            NodeProcess::spawn(&self.spec.bin, &node.spec, &[], &env).with_context(|| format!("start node {id}"))?;
        node.child = Some(child);
        node.state = ProcessState::Running;
        node.starts += 1;
        node.armed = armed;
        node.died_at_point = false;
        Ok(())
    }

    fn signal(&self, id: NodeId, signal: &str, from: ProcessState, to: ProcessState) -> Result<()> {
        let mut nodes = self.lock();
        let node = nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.state != from {
            bail!("cannot send SIG{signal} to node {id}: it is {:?}, not {from:?}", node.state);
        }
        let pid = node.child.as_ref().map(NodeProcess::pid).ok_or_else(|| anyhow!("node {id} has no process"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .with_context(|| format!("run kill -{signal} {pid}"))?;
        if !status.success() {
            bail!("kill -{signal} {pid} (node {id}) failed: {status}");
        }
        node.state = to;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, NodeProc>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.lock().values_mut() {
            // Killed and reaped as it drops.
            drop(node.child.take());
        }
        self.net.shutdown();
    }
}

/// Fails with a helpful message when `bin` is not an executable file.
fn check_binary(bin: &Path) -> Result<()> {
    let meta = std::fs::metadata(bin).map_err(|e| {
        anyhow!(
            "cannot use the geocache binary {}: {e}. Build it (cargo build -p geocache-node) or pass --bin PATH / \
             GEOCACHE_BIN",
            bin.display()
        )
    })?;
    if !meta.is_file() {
        bail!("the geocache binary {} is not a file", bin.display());
    }
    Ok(())
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Merges environment entries in order: a later `FAILPOINTS` is appended to an earlier one
/// (`a=return;b=1*panic`), any other variable is overridden. Keeps first-seen order.
fn merge_env(entries: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in entries {
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some((_, old)) if k == "FAILPOINTS" && !old.is_empty() && !v.is_empty() => *old = format!("{old};{v}"),
            Some((_, old)) => *old = v,
            None => out.push((k, v)),
        }
    }
    out
}

/// The fault point of `armed` (a `FAILPOINTS` value, `name=action;...`) whose panic the log
/// text shows (the `fail` crate panics with `failpoint NAME panic`), if any.
pub fn fault_point_panic(armed: &str, log: &str) -> Option<String> {
    armed
        .split(';')
        .filter_map(|item| item.split_once('=').map(|(name, _)| name.trim()))
        .find(|name| !name.is_empty() && log.contains(&format!("failpoint {name} panic")))
        .map(str::to_string)
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `--tls`: a throwaway CA and a member certificate per node (ids 1..=nodes, for 127.0.0.1) in
/// `dir`. Returns the CA's certificate (PEM) and each node's `--tls-*` flags, in id order.
fn make_certificates(dir: &Path, nodes: u64) -> Result<(Vec<u8>, Vec<Vec<String>>)> {
    use geocache_node::tls::cert;
    let ca = cert::new_ca("geocache-jepsen throwaway CA", 2).context("make the run's CA")?;
    let (ca_path, _) = cert::write_pair(dir, cert::CA_STEM, &ca).context("write the run's CA")?;
    let mut flags = Vec::new();
    for id in 1..=nodes {
        let name = format!("node-{id}");
        let pair = cert::new_member(&ca, &name, &["127.0.0.1".to_string()], 2).context("make a node certificate")?;
        let (cert_path, key_path) = cert::write_pair(dir, &name, &pair).context("write a node certificate")?;
        flags.push(
            [("--tls-cert", &cert_path), ("--tls-key", &key_path), ("--tls-ca", &ca_path)]
                .into_iter()
                .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
                .collect(),
        );
    }
    Ok((ca.cert_pem.into_bytes(), flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named() {
        let err = check_binary(Path::new("/nonexistent/geocache")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/geocache") && err.contains("--bin"), "{err}");
    }

    #[test]
    fn env_merges_failpoints_and_overrides_the_rest() {
        let e = |k: &str, v: &str| (k.to_string(), v.to_string());
        let merged = merge_env(vec![
            e("FAILPOINTS", "read-skip-read-index=return"),
            e("A", "1"),
            e("FAILPOINTS", "apply-after=1*panic"),
            e("A", "2"),
        ]);
        assert_eq!(merged, vec![e("FAILPOINTS", "read-skip-read-index=return;apply-after=1*panic"), e("A", "2")]);
    }

    #[test]
    fn fault_point_panics_are_recognised() {
        let log = "thread 'tokio-runtime-worker' panicked at node/src/store/log_store.rs:180:17:\nfailpoint log-flush-after panic";
        assert_eq!(fault_point_panic("log-flush-after=3%1*panic", log).as_deref(), Some("log-flush-after"));
        assert_eq!(
            fault_point_panic("read-skip-read-index=return;log-flush-after=1*panic", log).as_deref(),
            Some("log-flush-after")
        );
        assert_eq!(fault_point_panic("apply-after=1*panic", log), None);
        assert_eq!(fault_point_panic("apply-after=1*panic", "segfault"), None);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), "b\nc");
        assert_eq!(log_tail(&path, 10), "a\nb\nc");
        assert_eq!(log_tail(&dir.path().join("none"), 3), "");
    }
}
