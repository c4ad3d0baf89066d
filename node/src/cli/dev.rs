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
//!
//! Each node has a client port (`--base-port` + N - 1) and a peer port (`--peer-base-port` +
//! N - 1, by default 100 above its client port, as `serve` would pick). With `--secure`, a
//! throwaway CA, node certificates and an admin token are made in `DATA_DIR/tls/`
//! ([`crate::tls::cert`]): every node runs with mutual TLS on its peer port, TLS on its client
//! and Redis ports, and `--tokens`; `dev`'s own calls use the CA and the token.
//!
//! Ports, regions, data dirs, the `serve` flags, spawning (children killed when dropped),
//! init and the waits are [`crate::launcher`]'s, as for the tests and the harness.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use geocache_client::{Client, Member};
use geocache_proto as pb;

use super::DevArgs;
use crate::launcher::{self, Initialised, NodeProcess, NodeSpec, REGIONS};
use crate::netsim::{format_delay, raft_timing, LatencyMatrix, Netsim};

/// How long adding one learner (and waiting until it has caught up) may take.
const ADD_LEARNER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the voters may take to come up and elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A node `dev` starts.
struct DevNode {
    spec: NodeSpec,
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
        // The proxy sits on the peer listeners: only member-to-member traffic pays the latency.
        for n in nodes {
            addrs.push((n.member.id, n.spec.peer_addr));
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
    if args.resp_base_port as u64 + total - 1 > u16::MAX as u64 {
        return Err(format!("--resp-base-port {} leaves no room for {total} nodes", args.resp_base_port));
    }
    if args.metrics_base_port as u64 + total - 1 > u16::MAX as u64 {
        return Err(format!("--metrics-base-port {} leaves no room for {total} nodes", args.metrics_base_port));
    }
    // Peer ports follow `serve`'s own rule (client port + 100) unless given.
    let peer_base_port =
        args.peer_base_port.map(u64::from).unwrap_or(args.base_port as u64 + crate::config::PEER_PORT_OFFSET as u64);
    if peer_base_port + total - 1 > u16::MAX as u64 {
        return Err(format!("peer ports from {peer_base_port} leave no room for {total} nodes; give --peer-base-port"));
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
    let mut nodes: Vec<DevNode> = (1..=total)
        .map(|id| {
            let addr = SocketAddr::from(([127, 0, 0, 1], (args.base_port as u64 + id - 1) as u16));
            let peer = SocketAddr::from(([127, 0, 0, 1], (peer_base_port + id - 1) as u16));
            let resp = SocketAddr::from(([127, 0, 0, 1], (args.resp_base_port as u64 + id - 1) as u16));
            let metrics = SocketAddr::from(([127, 0, 0, 1], (args.metrics_base_port as u64 + id - 1) as u16));
            let spec = NodeSpec::in_dir(&root, id, addr, &REGIONS)
                .with_peer(peer)
                .with_resp(resp)
                .with_metrics(metrics)
                .with_args(["--max-entries".to_string(), args.max_entries.to_string()]);
            DevNode { member: spec.member(), spec, learner: id > args.nodes }
        })
        .collect();
    let security = if args.secure {
        let dir = root.join("tls");
        let (files, security) = secure(&dir, &nodes)?;
        for (n, args) in nodes.iter_mut().zip(files) {
            n.spec.extra_args.extend(args);
            n.spec.access = security.access();
        }
        Some(security)
    } else {
        None
    };
    let access = security.as_ref().map(DevSecurity::access).unwrap_or_default();
    let members: Vec<pb::Member> = nodes.iter().filter(|n| !n.learner).map(|n| n.member.clone()).collect();
    // Lives until the children are stopped: their node-to-node traffic flows through it.
    let wan = args.wan_latency.as_ref().map(|matrix| Wan::start(matrix, &nodes)).transpose()?;
    if let Some(wan) = &wan {
        for n in &mut nodes {
            n.spec.extra_args.extend(wan.serve_args(n.spec.id));
        }
    }

    // Killed when dropped: on return, early or not.
    let mut children = Vec::new();
    for n in &nodes {
        let child = NodeProcess::spawn(&exe, &n.spec, &[], &[]).map_err(|e| e.to_string())?;
        let (m, role) = (&n.member, if n.learner { "learner" } else { "voter" });
        let resp = n.spec.resp_addr.map(|a| format!(", RESP {a}")).unwrap_or_default();
        let metrics = n.spec.metrics_addr.map(|a| format!(", metrics {a}")).unwrap_or_default();
        eprintln!(
            "started {role} {} ({}) on {}, peer {}{resp}{metrics}  [pid {}]",
            m.id,
            m.region,
            m.addr,
            m.peer_addr,
            child.pid()
        );
        children.push(child);
    }

    let first = &nodes[0].spec;
    match launcher::init(first, members.clone(), START_TIMEOUT).await.map_err(|e| e.to_string())? {
        Initialised::Now => eprintln!("initialised a {}-voter cluster", members.len()),
        Initialised::Before => eprintln!("cluster already initialised; resuming"),
    }
    let voters: Vec<(u64, String)> =
        nodes.iter().filter(|n| !n.learner).map(|n| (n.member.id, n.member.addr.clone())).collect();
    let leader = launcher::wait_for_leader(|| voters.clone(), &access, START_TIMEOUT)
        .await
        .map_err(|e| format!("{e}; see the node logs in {}", root.display()))?;
    eprintln!("leader elected: node {leader}");
    for n in nodes.iter().filter(|n| n.learner) {
        add_learner(&first.addr.to_string(), &n.member, security.as_ref()).await?;
    }

    println!();
    println!("geocache dev cluster is up. Data and logs: {}", root.display());
    for n in &nodes {
        let m = &n.member;
        let role = if n.learner { "learner" } else { "voter" };
        let resp = n.spec.resp_addr.map(|a| a.to_string()).unwrap_or_default();
        let metrics = n.spec.metrics_addr.map(|a| a.to_string()).unwrap_or_default();
        println!(
            "  node {}  {:<9} grpc {:<21} peer {:<21} resp {:<21} metrics {:<21} {role}",
            m.id, m.region, m.addr, m.peer_addr, resp, metrics
        );
    }
    if let Some(security) = &security {
        println!(
            "Secure: mutual TLS between the nodes, TLS on every client and Redis port, and an admin token \
             (throwaway CA and token in {}). For the commands below:",
            root.join("tls").display()
        );
        println!(
            "  export GEOCACHE_TLS_CA={} GEOCACHE_TOKEN=$(cat {})",
            security.ca_path.display(),
            security.token_path.display()
        );
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
    if let Some(resp) = nodes.first().and_then(|n| n.spec.resp_addr) {
        let secured = security
            .as_ref()
            .map(|s| format!(" --tls --cacert {} --pass $(cat {})", s.ca_path.display(), s.token_path.display()))
            .unwrap_or_default();
        println!(
            "  redis-cli{secured} -p {} set greeting hello EX 60    # any Redis client, on any node's RESP port",
            resp.port()
        );
    }
    if let Some(metrics) = nodes.first().and_then(|n| n.spec.metrics_addr) {
        println!("  curl -s http://{metrics}/metrics | grep ^geocache_raft    # Prometheus metrics, on any node");
    }
    println!("(with cargo: cargo run --release -- <command>). Press Ctrl-C to stop.");

    wait_for_stop_signal().await;
    eprintln!("stopping {} nodes", children.len());
    drop(children);
    drop(wan);
    Ok(())
}

/// Adds `member` as a learner through the node at `via` (any node; it forwards to the leader)
/// and waits until it has caught up. A node already in the membership (a resumed `--data-dir`)
/// is left as it is.
async fn add_learner(via: &str, member: &pb::Member, security: Option<&DevSecurity>) -> Result<(), String> {
    let mut builder = Client::builder();
    if let Some(security) = security {
        builder = builder.tls_ca_pem(security.ca_pem.clone()).token(security.token.clone());
    }
    let client = builder
        .endpoints([via])
        .discovery(false)
        .only_endpoints(true)
        .timeout(ADD_LEARNER_TIMEOUT)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(status) = client.node_status(via, false).await {
        if let Some(node) = status.nodes.iter().find(|n| n.id == member.id) {
            eprintln!("node {} is a member already ({})", member.id, node.role);
            return Ok(());
        }
    }
    let what = format!("node {} to be added as a learner", member.id);
    let added = launcher::eventually(&what, ADD_LEARNER_TIMEOUT, || async {
        let new =
            Member::new(member.id, member.addr.clone(), member.region.clone()).with_peer_addr(member.peer_addr.clone());
        match client.add_learner(new, true).await {
            // Right after the election the initial membership may still be uncommitted, and
            // openraft refuses a second change until it is: try again.
            Err(geocache_client::Error::FailedPrecondition(why)) => {
                tracing::debug!("adding learner {}: {why}; retrying", member.id);
                None
            }
            other => Some(other),
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    added.map_err(|e| format!("adding learner {} failed: {e}", member.id))?;
    eprintln!("added learner {} ({}); it has caught up", member.id, member.region);
    Ok(())
}

/// What `--secure` made, for `dev`'s own calls and for what it prints.
struct DevSecurity {
    ca_pem: Vec<u8>,
    ca_path: PathBuf,
    /// The admin token (kept in `token_path`, 0600; never printed).
    token: String,
    token_path: PathBuf,
}

impl DevSecurity {
    /// How the launcher's admin calls reach the nodes.
    fn access(&self) -> launcher::ClientAccess {
        launcher::ClientAccess::default().with_ca(&self.ca_pem).with_token(&self.token)
    }
}

/// `--secure`'s admin token in `dir` (`admin.token`, and `tokens` for `serve --tokens`), made
/// once: 128 random bits in hex.
fn admin_token(dir: &std::path::Path) -> Result<(String, PathBuf, PathBuf), String> {
    let token_path = dir.join("admin.token");
    let tokens_path = dir.join("tokens");
    if !token_path.exists() {
        let token: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
        crate::tls::cert::write_new(&token_path, token.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        let line = format!("# made by geocache dev --secure\nadmin {token}\n");
        crate::tls::cert::write_new(&tokens_path, line.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        eprintln!("made an admin token: {} (mode 0600)", token_path.display());
    }
    let token = std::fs::read_to_string(&token_path)
        .map_err(|e| format!("cannot read {}: {e}", token_path.display()))?
        .trim()
        .to_string();
    Ok((token, token_path, tokens_path))
}

/// `--secure`: a throwaway CA and one certificate per node (for 127.0.0.1 and localhost) in
/// `dir`, through the same certificate module as `geocache cert`, and an admin token. Returns
/// each node's `--tls-*` and `--tokens` flags, in the order of `nodes`, and what `dev` needs to
/// call the nodes. A `dir` from an earlier run with `--data-dir` is reused.
fn secure(dir: &std::path::Path, nodes: &[DevNode]) -> Result<(Vec<Vec<String>>, DevSecurity), String> {
    use crate::tls::cert;
    const DAYS: u32 = 30;
    let (ca_cert, _) = cert::paths(dir, cert::CA_STEM);
    let ca = if ca_cert.exists() {
        eprintln!("reusing the dev CA in {}", dir.display());
        cert::read_pair(dir, cert::CA_STEM).map_err(|e| e.to_string())?
    } else {
        let ca = cert::new_ca("geocache dev CA (throwaway)", DAYS).map_err(|e| e.to_string())?;
        cert::write_pair(dir, cert::CA_STEM, &ca).map_err(|e| e.to_string())?;
        eprintln!("made a throwaway CA: {}", ca_cert.display());
        ca
    };
    let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let mut flags = Vec::new();
    for n in nodes {
        let name = format!("node-{}", n.spec.id);
        let (cert_path, key_path) = cert::paths(dir, &name);
        if !cert_path.exists() {
            let pair = cert::new_member(&ca, &name, &sans, DAYS).map_err(|e| e.to_string())?;
            cert::write_pair(dir, &name, &pair).map_err(|e| e.to_string())?;
            eprintln!("made the certificate of node {}: {} (key beside it, mode 0600)", n.spec.id, cert_path.display());
        }
        flags.push(vec![
            "--tls-cert".to_string(),
            cert_path.display().to_string(),
            "--tls-key".into(),
            key_path.display().to_string(),
            "--tls-ca".into(),
            ca_cert.display().to_string(),
        ]);
    }
    let (token, token_path, tokens_path) = admin_token(dir)?;
    for node_flags in &mut flags {
        node_flags.extend(["--tokens".to_string(), tokens_path.display().to_string()]);
    }
    let ca_pem = std::fs::read(&ca_cert).map_err(|e| format!("cannot read {}: {e}", ca_cert.display()))?;
    Ok((flags, DevSecurity { ca_pem, ca_path: ca_cert, token, token_path }))
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
