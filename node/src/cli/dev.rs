//! `geocache dev`: a working local cluster in one command. Starts N `geocache serve` child
//! processes on loopback (so any of them can be `kill -9`ed to watch failover), initialises them as
//! one cluster, adds the learners asked for, prints endpoints and example commands, and stops them
//! all on Ctrl-C or SIGTERM.
//!
//! With `--wan-latency`, distance is simulated inside this process: a [`Netsim`] link per ordered
//! pair of nodes, each delayed by the latency between the two nodes' regions, and every node is
//! started with `--route` flags for its outgoing links. Only node-to-node traffic pays the
//! latency; clients dial the nodes directly. The Raft timing is stretched to fit the slowest
//! round trip (see [`raft_timing`](crate::netsim::raft_timing)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;

use super::DevArgs;
use crate::netsim::{format_delay, raft_timing, LatencyMatrix, Netsim};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// How long adding one learner (and waiting until it has caught up) may take.
const ADD_LEARNER_TIMEOUT: Duration = Duration::from_secs(60);

/// A node `dev` starts.
struct DevNode {
    member: pb::Member,
    learner: bool,
}

/// The simulated WAN: the proxy (alive as long as this value) and the serve flags it implies.
struct Wan {
    _net: Netsim,
    /// `--route` flags per node id.
    routes: BTreeMap<u64, Vec<String>>,
    heartbeat: Duration,
    election: Duration,
    /// The latency matrix and Raft timing applied, for printing.
    summary: String,
}

impl Wan {
    /// Validates `matrix` against the regions in use and links every ordered pair of `nodes`
    /// with its regions' delay.
    fn start(matrix: &LatencyMatrix, nodes: &[DevNode]) -> Result<Wan, String> {
        let regions: Vec<&str> =
            REGIONS.iter().copied().filter(|r| nodes.iter().any(|n| n.member.region == *r)).collect();
        matrix.validate(&regions).map_err(|e| format!("--wan-latency: {e}"))?;
        let net = Netsim::new();
        let mut addrs = Vec::new();
        for n in nodes {
            let addr: SocketAddr =
                n.member.addr.parse().map_err(|e| format!("bad node address {}: {e}", n.member.addr))?;
            addrs.push((n.member.id, addr));
        }
        net.add_mesh(&addrs).map_err(|e| format!("cannot start the latency proxy: {e}"))?;
        let region_of: BTreeMap<u64, String> = nodes.iter().map(|n| (n.member.id, n.member.region.clone())).collect();
        net.apply_latency(matrix, &region_of);
        let routes = nodes.iter().map(|n| (n.member.id, net.route_args(n.member.id))).collect();
        let max_delay = matrix.max_delay(&regions);
        let (heartbeat, election) = raft_timing(max_delay);

        let mut summary =
            String::from("WAN latency (one-way, node-to-node only; a request and its reply pay it twice):\n");
        for line in matrix.table(&regions).lines() {
            summary.push_str(&format!("  {line}\n"));
        }
        summary.push_str(&format!(
            "Raft timing for a {} round trip: heartbeat {}, election timeout {}",
            format_delay(2 * max_delay),
            format_delay(heartbeat),
            format_delay(election)
        ));
        Ok(Wan { _net: net, routes, heartbeat, election, summary })
    }

    /// The extra `geocache serve` flags for node `id`.
    fn serve_args(&self, id: u64) -> Vec<String> {
        let mut args = self.routes.get(&id).cloned().unwrap_or_default();
        args.extend(["--heartbeat".into(), format!("{}ms", self.heartbeat.as_millis())]);
        args.extend(["--election-timeout".into(), format!("{}ms", self.election.as_millis())]);
        args
    }
}

pub(super) async fn run(args: DevArgs) -> i32 {
    match start(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("geocache dev: {e}");
            2
        }
    }
}

async fn start(args: DevArgs) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err("--nodes must be between 1 and 9".into());
    }
    if args.learners > 9 {
        return Err("--learners must be between 0 and 9".into());
    }
    let total = args.nodes + args.learners;
    if args.base_port as u64 + total - 1 > u16::MAX as u64 {
        return Err(format!("--base-port {} leaves no room for {total} nodes", args.base_port));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the geocache binary: {e}"))?;
    // A temp dir is removed when `_temp` drops at the end of this function.
    let (_temp, root): (Option<tempfile::TempDir>, PathBuf) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create --data-dir {}: {e}", dir.display()))?;
            (None, dir.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("geocache-dev-").tempdir().map_err(|e| e.to_string())?;
            let path = t.path().to_path_buf();
            (Some(t), path)
        }
    };
    // Voters are ids 1..=nodes, learners follow; regions in turn by id.
    let nodes: Vec<DevNode> = (1..=total)
        .map(|id| DevNode {
            member: pb::Member {
                id,
                addr: format!("127.0.0.1:{}", args.base_port as u64 + id - 1),
                region: REGIONS[(id as usize - 1) % REGIONS.len()].to_string(),
            },
            learner: id > args.nodes,
        })
        .collect();
    let members: Vec<pb::Member> = nodes.iter().filter(|n| !n.learner).map(|n| n.member.clone()).collect();
    // Lives until the children are stopped: their node-to-node traffic flows through it.
    let wan = args.wan_latency.as_ref().map(|matrix| Wan::start(matrix, &nodes)).transpose()?;

    let mut children = Vec::new();
    for DevNode { member: m, learner } in &nodes {
        let dir = root.join(format!("node-{}", m.id));
        let log = std::fs::File::create(root.join(format!("node-{}.log", m.id))).map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .args(["--id", &m.id.to_string(), "--region", &m.region, "--listen", &m.addr])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--max-entries", &args.max_entries.to_string()])
            .args(wan.as_ref().map(|w| w.serve_args(m.id)).unwrap_or_default())
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", m.id))?;
        let role = if *learner { "learner" } else { "voter" };
        eprintln!("started {role} {} ({}) on {}  [pid {}]", m.id, m.region, m.addr, child.id().unwrap_or(0));
        children.push(child);
    }

    let first = format!("http://{}", members[0].addr);
    let mut admin = wait_for_admin(&first, Duration::from_secs(20)).await?;
    match admin.init(pb::InitRequest { members: members.clone() }).await {
        Ok(_) => eprintln!("initialised a {}-voter cluster", members.len()),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => eprintln!("cluster already initialised; resuming"),
        Err(s) => return Err(format!("init failed: {}", s.message())),
    }
    let leader = wait_for_leader(&mut admin, Duration::from_secs(20)).await?;
    eprintln!("leader elected: node {leader}");
    for n in nodes.iter().filter(|n| n.learner) {
        add_learner(&mut admin, &n.member).await?;
    }

    println!();
    println!("geocache dev cluster is up. Data and logs: {}", root.display());
    for n in &nodes {
        let m = &n.member;
        let role = if n.learner { "learner" } else { "voter" };
        println!("  node {}  {:<9} {:<21} {role}", m.id, m.region, m.addr);
    }
    println!();
    if let Some(wan) = &wan {
        println!("{}", wan.summary);
        println!();
    }
    // The CLI's default endpoint is 127.0.0.1:7001; name node 1 when it lives elsewhere.
    let to_first =
        if members[0].addr == "127.0.0.1:7001" { String::new() } else { format!(" --endpoint {}", members[0].addr) };
    println!("Try, in another terminal:");
    println!("  geocache set greeting hello --ttl 60s{to_first}");
    println!("  geocache get greeting -v --endpoint {}", members.last().map(|m| m.addr.as_str()).unwrap_or_default());
    println!("  geocache cluster status{to_first}");
    if wan.is_some() {
        let far = nodes.last().map(|n| n.member.addr.as_str()).unwrap_or_default();
        println!("  time geocache set greeting again{to_first}    # a commit waits for a WAN round trip");
        println!("  time geocache get greeting --consistency stale --endpoint {far}    # answered locally");
    }
    println!("(with cargo: cargo run --release -- <command>). Press Ctrl-C to stop.");

    wait_for_stop_signal().await;
    eprintln!("stopping {} nodes", children.len());
    for child in &mut children {
        let _ = child.start_kill();
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    drop(wan);
    Ok(())
}

/// Adds `member` as a learner through `admin` (any node; it forwards to the leader) and waits
/// until it has caught up. A node already in the membership (a resumed `--data-dir`) is left as
/// it is.
async fn add_learner(admin: &mut AdminClient<tonic::transport::Channel>, member: &pb::Member) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + ADD_LEARNER_TIMEOUT;
    if let Ok(status) = admin.status(pb::StatusRequest { local_only: false }).await {
        if let Some(node) = status.into_inner().nodes.iter().find(|n| n.id == member.id) {
            eprintln!("node {} is a member already ({})", member.id, node.role);
            return Ok(());
        }
    }
    loop {
        let mut request =
            tonic::Request::new(pb::AddLearnerRequest { member: Some(member.clone()), wait_caught_up: true });
        request.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match admin.add_learner(request).await {
            Ok(_) => {
                eprintln!("added learner {} ({}); it has caught up", member.id, member.region);
                return Ok(());
            }
            // Right after the election the initial membership may still be uncommitted, and
            // openraft refuses a second change until it is: try again shortly.
            Err(s) if s.code() == tonic::Code::FailedPrecondition && tokio::time::Instant::now() < deadline => {
                tracing::debug!("adding learner {}: {}; retrying", member.id, s.message());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(format!("adding learner {} failed: {}", member.id, s.message())),
        }
    }
}

async fn wait_for_admin(uri: &str, within: Duration) -> Result<AdminClient<tonic::transport::Channel>, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match AdminClient::connect(uri.to_string()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(format!("{uri} never came up: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_for_leader(admin: &mut AdminClient<tonic::transport::Channel>, within: Duration) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = admin.status(pb::StatusRequest { local_only: true }).await {
            if let Some(leader) = r.into_inner().leader_id {
                return Ok(leader);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("no leader elected in time; see the node logs".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C or SIGTERM: either way the children are stopped before `dev` exits.
async fn wait_for_stop_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
